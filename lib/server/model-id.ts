// The model id a server names by default: what clients and dashboards expect to see, never a
// filesystem path (which says nothing to a client and tells it about the server's disk).
import { resolve, sep } from 'node:path';

import { parseHubRef } from '../checkpoint/hub.js';

/**
 * `openai/gpt-oss-20b` for a Hub id (a revision dropped) or a directory in a Hugging Face cache
 * (`.../models--openai--gpt-oss-20b/snapshots/<commit>`, or a folder in it); else the directory's base name.
 */
export function servedModelId(ref: string): string {
  const hub = parseHubRef(ref);
  if (hub) return hub.repo;
  const parts = resolve(ref).split(sep).filter(Boolean);
  const at = parts.lastIndexOf('snapshots');
  const repo = at > 0 && at < parts.length - 1 ? /^models--([^-].*?)--(.+)$/.exec(parts[at - 1]) : null;
  if (repo) return `${repo[1]}/${repo[2]}`;
  return parts.at(-1) ?? ref;
}
