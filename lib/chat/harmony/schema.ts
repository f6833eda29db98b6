// JSON Schema → the TypeScript-like text Harmony shows the model for tool parameters
// (kernels/MODEL.md, "Harmony tools"; test/fixtures/harmony/RULES.md §7). The layout is what the model
// was trained on, so it follows HAR's `json_schema_to_typescript` quirks exactly, including the
// ones that look odd (an object description printed before `{`, a lone `,` line closing a oneOf
// property).
//
// Property order is the schema object's own key order. JS keeps insertion order for string keys,
// but moves integer-like keys ("1", "42") first; schemas with such property names cannot keep
// their order through a plain object.

type JsonObject = { readonly [key: string]: unknown };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A key that is present at all, even with a null value (HAR tests presence with `get`). */
function has(schema: unknown, key: string): boolean {
  return isObject(schema) && Object.hasOwn(schema, key);
}

function get(schema: unknown, key: string): unknown {
  return isObject(schema) && Object.hasOwn(schema, key) ? schema[key] : undefined;
}

function getString(schema: unknown, key: string): string | undefined {
  const v = get(schema, key);
  return typeof v === 'string' ? v : undefined;
}

function isEnum(schema: unknown): boolean {
  const e = get(schema, 'enum');
  return Array.isArray(e) && e.length > 0;
}

function isNullable(schema: unknown): boolean {
  return get(schema, 'nullable') === true;
}

function withNullable(type: string, schema: unknown): string {
  return isNullable(schema) && !type.includes('null') ? `${type} | null` : type;
}

/** Compact JSON, as serde_json's Display writes a value. */
function json(v: unknown): string {
  return JSON.stringify(v) ?? 'null';
}

/**
 * A default value in a comment. Strings are quoted unless the schema is an enum (the values are
 * already listed as quoted literals). `enumStringsRaw` is false for whole-schema oneOf variants,
 * where HAR prints an enum's string default as JSON (quoted) instead.
 */
function defaultText(value: unknown, schema: unknown, enumStringsRaw = true): string {
  if (typeof value === 'string') {
    if (!isEnum(schema)) return `default: "${value}"`;
    if (enumStringsRaw) return `default: ${value}`;
  }
  return `default: ${json(value)}`;
}

/** Converts a parameter schema. `indent` prefixes the lines of nested objects. */
export function jsonSchemaToTypeScript(schema: unknown, indent = ''): string {
  const oneOf = get(schema, 'oneOf');
  if (Array.isArray(oneOf)) return wholeSchemaOneOf(oneOf, indent);

  const type = get(schema, 'type');
  if (Array.isArray(type)) {
    const names = type.filter((t): t is string => typeof t === 'string').map((t) => (t === 'integer' ? 'number' : t));
    if (names.length > 0) return names.join(' | ');
  }
  if (typeof type !== 'string') return 'any';
  switch (type) {
    case 'object':
      return objectType(schema, indent);
    case 'string': {
      const values = get(schema, 'enum');
      if (Array.isArray(values)) {
        const literals = values.filter((v): v is string => typeof v === 'string').map((v) => `"${v}"`);
        if (literals.length > 0) return literals.join(' | ');
      }
      return 'string';
    }
    case 'number':
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array':
      // Items share the array's indent (HAR does not grow it here).
      return has(schema, 'items') ? `${jsonSchemaToTypeScript(get(schema, 'items'), indent)}[]` : 'Array<any>';
    default:
      return 'any';
  }
}

/** A schema that is itself a oneOf: each variant on its own line with trailing comments. */
function wholeSchemaOneOf(variants: readonly unknown[], indent: string): string {
  let out = '';
  for (const variant of variants) {
    out += `\n${indent} | ${withNullable(jsonSchemaToTypeScript(variant, `${indent}   `), variant)}`;
    const comments: string[] = [];
    const desc = getString(variant, 'description');
    if (desc !== undefined) comments.push(desc);
    if (has(variant, 'default')) comments.push(defaultText(get(variant, 'default'), variant, false));
    if (comments.length > 0) out += ` // ${comments.join(' ')}`;
  }
  return out;
}

function objectType(schema: unknown, indent: string): string {
  let out = '';
  const desc = getString(schema, 'description');
  if (desc !== undefined) out += `${indent}// ${desc}\n`;
  out += '{\n';
  const props = get(schema, 'properties');
  if (isObject(props)) {
    const requiredList = get(schema, 'required');
    const required = new Set(Array.isArray(requiredList) ? requiredList.filter((r) => typeof r === 'string') : []);
    for (const [key, prop] of Object.entries(props)) out += property(key, prop, required.has(key), indent);
  }
  return `${out}${indent}}`;
}

/** One property: comment lines above it, then `name?: type,` (or the oneOf layout). */
function property(key: string, prop: unknown, required: boolean, indent: string): string {
  let out = '';
  const title = getString(prop, 'title');
  if (title !== undefined) out += `${indent}// ${title}\n${indent}//\n`;
  const hasOneOf = has(prop, 'oneOf');
  // A oneOf property places its description itself (it may be folded into the first variant).
  if (!hasOneOf) {
    const desc = getString(prop, 'description');
    if (desc !== undefined) out += `${indent}// ${desc}\n`;
  }
  const examples = get(prop, 'examples');
  if (Array.isArray(examples) && examples.length > 0) {
    out += `${indent}// Examples:\n`;
    for (const ex of examples) if (typeof ex === 'string') out += `${indent}// - "${ex}"\n`;
  }
  const mark = required ? '' : '?';

  const oneOf = get(prop, 'oneOf');
  if (Array.isArray(oneOf)) return out + oneOfProperty(key, mark, prop, oneOf, indent);

  out += `${indent}${key}${mark}: ${withNullable(jsonSchemaToTypeScript(prop, `${indent}    `), prop)},`;
  // A oneOf key that is not an array still suppresses the default comment, as in HAR.
  if (!hasOneOf && has(prop, 'default')) out += ` // ${defaultText(get(prop, 'default'), prop)}`;
  return `${out}\n`;
}

function oneOfProperty(key: string, mark: string, prop: unknown, variants: readonly unknown[], indent: string): string {
  let out = '';
  const propDesc = getString(prop, 'description');
  // The property's description is not repeated above when the first variant already says it.
  const descAbove = propDesc !== undefined && getString(variants[0], 'description') !== propDesc;
  if (descAbove) out += `${indent}// ${propDesc}\n`;
  if (has(prop, 'default')) out += `${indent}// ${defaultText(get(prop, 'default'), prop)}\n`;
  out += `${indent}${key}${mark}:\n`;
  variants.forEach((variant, i) => {
    out += `${indent} | ${withNullable(jsonSchemaToTypeScript(variant, `${indent}   `), variant)}`;
    const comments: string[] = [];
    const desc = getString(variant, 'description');
    if (!(i === 0 && descAbove) && desc !== undefined && desc !== propDesc) comments.push(desc);
    if (has(variant, 'default')) comments.push(defaultText(get(variant, 'default'), variant));
    if (comments.length > 0) out += ` // ${comments.join(' ')}`;
    out += '\n';
  });
  return `${out}${indent},\n`;
}
