// The ops a program is made of, as TypeScript sees them: one table mirroring each op's fields in
// kernels/<op>.h (its `fields(v)` list), from which the OpSpec union is derived. The addon exports
// its own list (kernels/ops.h) and test/ops.test.ts checks the two are the same, so they cannot
// drift. Field kinds: 'buffer' an activation buffer, 'kv' a KV pool buffer, 'weight' a tensor of
// the model, 'int', 'float', 'flag' (boolean); a trailing '?' marks a field that may be left out.

/** A tensor id in a NativeWeights table. */
export type WeightId = number & { readonly __brand: 'WeightId' };
/** A buffer index in a program spec. */
export type BufferId = number & { readonly __brand: 'BufferId' };

export type FieldKind = 'buffer' | 'kv' | 'weight' | 'int' | 'float' | 'flag';

export const OP_FIELDS = {
  embed: { w: 'weight', y: 'buffer', H: 'int' },
  rmsnorm: { x: 'buffer', y: 'buffer', w: 'weight', H: 'int', eps: 'float', logitsRows: 'flag?' },
  matmul_bf16: {
    x: 'buffer',
    y: 'buffer?',
    w: 'weight',
    b: 'weight?',
    N: 'int',
    K: 'int',
    xcol: 'int?',
    ycol: 'int?',
    accumulate: 'flag?',
    logitsRows: 'flag?',
  },
  rope: { x: 'buffer', qHeads: 'int', kvHeads: 'int', headDim: 'int' },
  kv_append: {
    x: 'buffer',
    kc: 'kv',
    vc: 'kv',
    xcol: 'int',
    vcol: 'int',
    kvHeads: 'int',
    headDim: 'int',
    window: 'int',
  },
  attention: {
    x: 'buffer',
    y: 'buffer',
    kc: 'kv',
    vc: 'kv',
    w: 'weight',
    qHeads: 'int',
    kvHeads: 'int',
    headDim: 'int',
    window: 'int',
    scale: 'float',
  },
  router_topk: { x: 'buffer', idx: 'buffer', wt: 'buffer', E: 'int', k: 'int' },
  moe_mxfp4: {
    x: 'buffer',
    idx: 'buffer',
    y: 'buffer',
    w1b: 'weight',
    w1s: 'weight',
    b1: 'weight',
    w2b: 'weight',
    w2s: 'weight',
    b2: 'weight',
    E: 'int',
    k: 'int',
    H: 'int',
    I: 'int',
    limit: 'float',
    alpha: 'float',
  },
  moe_combine: { x: 'buffer', y: 'buffer', wt: 'buffer', k: 'int', H: 'int' },
} as const satisfies Record<string, Record<string, FieldKind | `${FieldKind}?`>>;

export type OpName = keyof typeof OP_FIELDS;
export const OP_NAMES = Object.keys(OP_FIELDS) as OpName[];

type FieldType<K> = K extends 'buffer' | 'buffer?' | 'kv' | 'kv?'
  ? BufferId
  : K extends 'weight' | 'weight?'
    ? WeightId
    : K extends 'flag' | 'flag?'
      ? boolean
      : number;
type Fields<F> = { [K in keyof F as F[K] extends `${string}?` ? never : K]: FieldType<F[K]> } & {
  [K in keyof F as F[K] extends `${string}?` ? K : never]?: FieldType<F[K]>;
};
type Flat<T> = { [K in keyof T]: T[K] };

/** One op of a program: `op` names it, the other keys are its fields (kernels/<op>.h). */
export type OpOf<N extends OpName> = Flat<{ op: N } & Fields<(typeof OP_FIELDS)[N]>>;
export type OpSpec = { [N in OpName]: OpOf<N> }[OpName];

/** An op's fields as the addon describes them (addon().ops). */
export interface NativeField {
  name: string;
  kind: FieldKind;
  optional: boolean;
}

/** The table above in the addon's form, for comparing the two. */
export function describeOps(): Record<string, NativeField[]> {
  return Object.fromEntries(
    OP_NAMES.map((name) => [
      name,
      Object.entries(OP_FIELDS[name]).map(([field, kind]: [string, string]) => ({
        name: field,
        kind: kind.replace('?', '') as FieldKind,
        optional: kind.endsWith('?'),
      })),
    ]),
  );
}
