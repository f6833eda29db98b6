// JSON Schemas of each kind structured output must handle; every one has a bounded length, so a
// random model under the constraint finishes its document within a few dozen tokens.
import type { JsonSchema } from '../../lib/chat/harmony/types.js';

export const SCHEMAS: Record<string, JsonSchema> = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string', pattern: '^[a-z]{1,8}$' },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      tags: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, maxItems: 3 },
    },
    required: ['name', 'age'],
    additionalProperties: false,
  },
  nested: {
    type: 'object',
    properties: {
      user: {
        type: 'object',
        properties: { id: { type: 'integer', minimum: 1, maximum: 999 }, role: { enum: ['admin', 'user'] } },
        required: ['id', 'role'],
      },
      active: { type: 'boolean' },
      scores: { type: 'array', items: { type: 'integer', minimum: -5, maximum: 10 }, minItems: 1, maxItems: 4 },
    },
    required: ['user', 'active', 'scores'],
  },
  refs: {
    $defs: {
      point: {
        type: 'object',
        properties: { x: { type: 'integer', minimum: 0, maximum: 9 }, y: { type: 'integer', minimum: 0, maximum: 9 } },
        required: ['x', 'y'],
      },
    },
    type: 'object',
    properties: {
      kind: { const: 'segment' },
      from: { $ref: '#/$defs/point' },
      to: { $ref: '#/$defs/point' },
      label: { anyOf: [{ type: 'string', pattern: '^[A-Z]{2}$' }, { type: 'null' }] },
    },
    required: ['kind', 'from', 'to', 'label'],
  },
  strings: {
    type: 'object',
    properties: {
      code: { type: 'string', pattern: '^[a-z0-9]{2,4}$' },
      level: { enum: ['low', 'mid', 'high'] },
      note: { type: 'string', minLength: 1, maxLength: 6 },
    },
    required: ['code', 'level'],
  },
  tuple: {
    type: 'array',
    prefixItems: [{ type: 'integer', minimum: 1, maximum: 3 }, { enum: ['a', 'b'] }, { type: 'boolean' }],
    items: false,
  },
};
