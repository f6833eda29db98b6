// Model references that name a Hugging Face Hub repo ("openai/gpt-oss-20b", "org/name@rev"),
// resolved through the standard Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
// ~/.cache/huggingface/hub; models--org--name/{blobs,snapshots,refs}) so weights other tools
// downloaded are found without the network; and `pull`, which fills that cache with what the
// engine needs, resumably, checking every file against the Hub's checksums. Hub calls go
// through the maintained @huggingface/hub client.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import {
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  statfs,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';

import { downloadFile, fileDownloadInfo, listFiles, modelInfo } from '@huggingface/hub';

import { parseConfig } from './config.js';
import {
  AbortedError,
  CheckpointError,
  GptOssError,
  InvalidArgumentError,
  NetworkError,
  OutOfMemoryError,
} from '../errors.js';

export type WeightLayout = 'hf' | 'original';

export const DEFAULT_MODEL = 'openai/gpt-oss-20b';

/** A model reference that is not a directory on disk: a Hub repo id with an optional revision. */
export interface HubRef {
  repo: string;
  revision: string;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+(@.*)?$/s;

/**
 * Whether `rev` is a revision the Hub can have: a commit, or a branch or tag name by git's
 * check-ref-format rules. The name becomes a path under the cache's refs/, so `..`, a leading
 * `/` and the like must never get that far.
 */
export function isValidRevision(rev: string): boolean {
  if (rev.length === 0 || rev.length > 255 || rev === '@') return false;
  // Control characters, space and ~ ^ : ? * [ \ are not allowed anywhere; neither are .. and @{.
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(rev) || rev.includes('..') || rev.includes('@{')) return false;
  if (rev.endsWith('.')) return false;
  // No empty component (leading, trailing or doubled /), none starting with . or ending with .lock.
  return rev.split('/').every((c) => c.length > 0 && !c.startsWith('.') && !c.endsWith('.lock'));
}

/** A Hub id unless it names something on disk (or looks like a path). */
export function parseHubRef(ref: string): HubRef | undefined {
  if (ref.startsWith('/') || ref.startsWith('.') || ref.startsWith('~') || existsSync(ref) || !HUB_ID.test(ref))
    return undefined;
  const at = ref.indexOf('@');
  if (at < 0) return { repo: ref, revision: 'main' };
  const revision = ref.slice(at + 1);
  if (!isValidRevision(revision))
    throw new InvalidArgumentError(
      `${JSON.stringify(ref)}: ${JSON.stringify(revision)} is not a revision the Hub allows (a commit, or a branch or tag name)`,
    );
  return { repo: ref.slice(0, at), revision };
}

export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  const home = process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

const repoDir = (cache: string, repo: string) => join(cache, `models--${repo.replace('/', '--')}`);
const isCommit = (s: string) => /^[0-9a-f]{40}$/.test(s);

/** A repo or revision the Hub (or the cache, offline) does not have. */
export class ModelNotFoundError extends CheckpointError {
  constructor(message: string, where: { file?: string } = {}, options?: { cause?: unknown }) {
    super(message, where, options);
    this.name = 'ModelNotFoundError';
  }
}

/** The shortest commit prefix taken for a commit, as git abbreviates them. */
export const MIN_REVISION_PREFIX = 7;

/**
 * The cached commit a revision names, or undefined. No network. A branch or tag with a ref file
 * wins (as in git); else a full commit; else any unique prefix of at least 7 hex digits of a
 * cached snapshot's commit (`gptoss list` prints 12). A prefix that fits several is an error
 * listing them.
 */
export async function cachedCommit(ref: HubRef, cacheDir = hubCacheDir()): Promise<string | undefined> {
  const dir = repoDir(cacheDir, ref.repo);
  if (!isValidRevision(ref.revision)) return undefined;
  // What a ref file holds names a directory: only a commit may.
  const named = await readFile(join(dir, 'refs', ref.revision), 'utf8').then(
    (t) => t.trim(),
    () => undefined,
  );
  if (named !== undefined) return isCommit(named) ? named : undefined;
  if (isCommit(ref.revision)) return ref.revision;
  const prefix = ref.revision.toLowerCase();
  if (!new RegExp(`^[0-9a-f]{${MIN_REVISION_PREFIX},39}$`).test(prefix)) return undefined;
  const hits = (await readdir(join(dir, 'snapshots')).catch(() => [] as string[])).filter(
    (c) => isCommit(c) && c.startsWith(prefix),
  );
  if (hits.length > 1)
    throw new InvalidArgumentError(
      `${ref.repo}@${ref.revision}: ${hits.length} cached revisions start with ${ref.revision} (${hits.map((c) => c.slice(0, 12)).join(', ')}); give more of the commit`,
    );
  return hits[0];
}

/** The snapshot directory of a cached revision (a ref, a commit or a unique prefix), or undefined. No network. */
export async function cachedSnapshot(ref: HubRef, cacheDir = hubCacheDir()): Promise<string | undefined> {
  const commit = await cachedCommit(ref, cacheDir);
  if (commit === undefined) return undefined;
  const snap = join(repoDir(cacheDir, ref.repo), 'snapshots', commit);
  return existsSync(snap) ? snap : undefined;
}

/**
 * A directory to load: the reference itself when it is a directory, else the cached snapshot of
 * the Hub id. Throws ModelNotFoundError saying how to get it.
 */
export async function resolveModelDir(ref: string, cacheDir = hubCacheDir()): Promise<string> {
  const hub = parseHubRef(ref);
  if (!hub) return ref;
  const snap = await cachedSnapshot(hub, cacheDir);
  if (!snap)
    throw new ModelNotFoundError(
      `${ref} is not in the Hugging Face cache (${cacheDir}); download it with: gptoss pull ${ref}`,
    );
  return snap;
}

export interface PullProgress {
  /** 'download': bytes arriving; 'check': a file's checksum being computed (fileBytes hashed so far). */
  phase: 'download' | 'check';
  file: string;
  fileBytes: number;
  fileSize: number;
  /** Bytes of the layout in the cache and checked, or arriving: bytesTotal when done. */
  bytesDone: number;
  bytesTotal: number;
  /** Bytes fetched over the network by this call so far (what a speed is measured on). */
  bytesDownloaded: number;
  filesDone: number;
  filesTotal: number;
}

export interface PullOptions {
  layout?: WeightLayout;
  /** Default: the HF_ENDPOINT environment variable, else https://huggingface.co. */
  hubUrl?: string;
  /** Default: HF_TOKEN. */
  token?: string;
  cacheDir?: string;
  signal?: AbortSignal;
  /**
   * Recompute the checksum of files already in the cache (default false: their size is compared
   * with the Hub's listing; files downloaded now are always checksummed). A file that fails either
   * check is downloaded again.
   */
  verify?: boolean;
  onProgress?: (p: PullProgress) => void;
}

export interface PullResult {
  repo: string;
  commit: string;
  dir: string;
  layout: WeightLayout;
  /** downloaded: fetched by this call (else it was in the cache); repaired: in the cache, but wrong. */
  files: { path: string; size: number; downloaded: boolean; repaired?: string }[];
  bytesDownloaded: number;
  /** How the files that were already cached were checked: their size, or their checksum (verify). */
  cachedChecked: 'size' | 'checksum';
}

interface RemoteFile {
  path: string;
  size: number;
  /** Git blob sha1 for small files, sha256 for LFS files: the blob's name in the cache. */
  oid: string;
  sha256?: string;
}

/** The files of one layout the engine reads: config, index, safetensors shards. */
export function layoutFiles(paths: string[], layout: WeightLayout): string[] {
  const prefix = layout === 'original' ? 'original/' : '';
  return paths.filter((p) => {
    if (!p.startsWith(prefix)) return false;
    const rest = p.slice(prefix.length);
    if (rest.includes('/')) return false;
    return (
      rest === 'config.json' ||
      rest === 'model.safetensors.index.json' ||
      /^model(-\d+-of-\d+)?\.safetensors$/.test(rest)
    );
  });
}

/** Why a request failed when the network failed it: the system's code (fetch wraps it: "fetch
 * failed", cause ENOTFOUND), or fetch's own reason ("bad port"); undefined for anything else. */
function networkReason(e: unknown): string | undefined {
  let fetchFailed = false;
  for (let c = e, depth = 0; c && depth < 4; c = (c as { cause?: unknown }).cause, depth++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return code;
    if (c instanceof TypeError && c.message === 'fetch failed') fetchFailed = true;
    else if (fetchFailed && c instanceof Error) return c.message;
  }
  return fetchFailed ? 'fetch failed' : undefined;
}

function hubError(e: unknown, ref: HubRef, hubUrl: string): GptOssError {
  if (e instanceof GptOssError) return e;
  const reason = networkReason(e);
  if (reason)
    return new NetworkError(
      `cannot reach the Hub at ${hubUrl} (${reason}${reason === 'ENOTFOUND' || reason === 'EAI_AGAIN' ? ': no network or no DNS?' : ''}); a model already in the cache loads without it`,
      { cause: e, reason },
    );
  const status = (e as { statusCode?: number }).statusCode;
  const msg = (e as Error).message ?? String(e);
  if (status === 404 && /\brev(ision)?\b/i.test(msg))
    return new ModelNotFoundError(
      `revision ${ref.revision} of ${ref.repo} does not exist on the Hub`,
      {},
      { cause: e },
    );
  if (status === 404)
    return new ModelNotFoundError(
      `${ref.repo} does not exist on the Hub (or is private: set HF_TOKEN)`,
      {},
      { cause: e },
    );
  if (status === 401 || status === 403)
    return new ModelNotFoundError(
      `${ref.repo}: access denied (gated or private: set HF_TOKEN to a token with access)`,
      {},
      { cause: e },
    );
  return new CheckpointError(`Hub request for ${ref.repo}@${ref.revision} failed: ${msg}`, {}, { cause: e });
}

/** The hash the Hub publishes for a file, recomputed over the bytes on disk. */
async function fileDigest(path: string, f: RemoteFile, onBytes?: (hashed: number) => void): Promise<string> {
  const h = f.sha256 ? createHash('sha256') : createHash('sha1').update(`blob ${f.size}\0`);
  let hashed = 0,
    told = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    hashed += (chunk as Buffer).length;
    if (hashed - told >= 64 << 20) onBytes?.((told = hashed));
  }
  onBytes?.(hashed);
  return h.digest('hex');
}

/**
 * Downloads one layout of a Hub model into the Hugging Face cache. Files already in the cache are
 * kept; a partial download (`blobs/<hash>.incomplete`) is resumed; every file is checked against
 * the Hub's sha256 (git sha1 for small files) before it is linked into the snapshot.
 */
export async function pull(id: string, options: PullOptions = {}): Promise<PullResult> {
  const ref = parseHubRef(id);
  if (!ref)
    throw new InvalidArgumentError(`pull: ${JSON.stringify(id)} is not a Hub model id (org/name or org/name@revision)`);
  const layout = options.layout ?? 'hf';
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const hubUrl = options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
  const accessToken = options.token ?? process.env.HF_TOKEN;
  const signal = options.signal;
  // Every Hub request carries the caller's signal, so Ctrl-C stops a download at once.
  const hubFetch: typeof fetch = (input, init) => fetch(input, { ...init, signal });
  const common = { hubUrl, fetch: hubFetch, ...(accessToken ? { accessToken } : {}) };

  // A commit prefix (what `gptoss list` prints) of a cached snapshot is asked for in full.
  const cached = await cachedCommit(ref, cacheDir);
  const revision = cached?.startsWith(ref.revision.toLowerCase()) ? cached : ref.revision;
  let commit: string;
  const remote: RemoteFile[] = [];
  try {
    const info = await modelInfo({ name: ref.repo, revision, additionalFields: ['sha'], ...common });
    commit = (info as { sha?: string }).sha ?? '';
    if (!isCommit(commit)) throw new CheckpointError(`the Hub gave no commit for ${ref.repo}@${ref.revision}`);
    for await (const f of listFiles({
      repo: { type: 'model', name: ref.repo },
      revision: commit,
      recursive: true,
      ...common,
    }))
      if (f.type === 'file')
        remote.push({ path: f.path, size: f.size, oid: f.lfs?.oid ?? f.oid ?? '', sha256: f.lfs?.oid });
  } catch (e) {
    if (signal?.aborted) throw new AbortedError('pull was interrupted', { cause: e });
    throw hubError(e, ref, hubUrl);
  }
  const wanted = layoutFiles(
    remote.map((f) => f.path),
    layout,
  );
  if (!wanted.some((p) => p.endsWith('config.json')) || !wanted.some((p) => p.endsWith('.safetensors')))
    throw new ModelNotFoundError(
      `${ref.repo}@${ref.revision} has no ${layout}-layout checkpoint (config.json and *.safetensors${layout === 'original' ? ' under original/' : ''})`,
    );
  const files = remote.filter((f) => wanted.includes(f.path));
  for (const f of files) {
    if (!/^[0-9a-f]{40,64}$/.test(f.oid)) throw new CheckpointError(`the Hub gave no checksum for ${f.path}`);
    // The free-space check and the download's bound both rest on this number.
    if (!Number.isSafeInteger(f.size) || f.size < 0)
      throw new CheckpointError(`the Hub gave no valid size for ${f.path} (${JSON.stringify(f.size)})`);
  }

  const root = repoDir(cacheDir, ref.repo);
  const blobs = join(root, 'blobs');
  const snap = join(root, 'snapshots', commit);
  await mkdir(blobs, { recursive: true });

  // A cached file whose size is not the Hub's is damaged: it is downloaded again.
  const repairs = new Map<string, string>();
  for (const f of files) {
    const size = await stat(join(blobs, f.oid)).then(
      (st) => st.size,
      () => undefined,
    );
    if (size === undefined || size === f.size) continue;
    repairs.set(f.oid, `in the cache with ${size} bytes, the Hub lists ${f.size}`);
    await rm(join(blobs, f.oid), { force: true });
  }

  // What is missing, counting partial downloads as progress already made.
  let need = 0;
  for (const f of files) {
    if (existsSync(join(blobs, f.oid))) continue;
    const partial = await stat(join(blobs, `${f.oid}.incomplete`)).then(
      (s) => s.size,
      () => 0,
    );
    need += f.size - partial;
  }
  const fsInfo = await statfs(blobs);
  const free = Number(fsInfo.bavail) * Number(fsInfo.bsize);
  if (need > free)
    throw new OutOfMemoryError(
      `pull: ${(need / 1e9).toFixed(2)} GB still to download, but only ${(free / 1e9).toFixed(2)} GB free under ${cacheDir}`,
    );

  const bytesTotal = files.reduce((a, f) => a + f.size, 0);
  let bytesDone = 0,
    filesDone = 0,
    bytesDownloaded = 0;
  const result: PullResult['files'] = [];
  const progress = (phase: PullProgress['phase'], f: RemoteFile, fileBytes: number, done: number) =>
    options.onProgress?.({
      phase,
      file: f.path,
      fileBytes,
      fileSize: f.size,
      bytesDone: done,
      bytesTotal,
      bytesDownloaded,
      filesDone,
      filesTotal: files.length,
    });
  for (const f of files) {
    const blob = join(blobs, f.oid);
    let downloaded = false;
    let repaired = repairs.get(f.oid);
    if (options.verify && existsSync(blob)) {
      const digest = await fileDigest(blob, f, (hashed) => progress('check', f, hashed, bytesDone + hashed));
      if (digest !== f.oid) {
        await rm(blob, { force: true });
        repaired = `in the cache with ${f.sha256 ? 'sha256' : 'git sha1'} ${digest}, the Hub says ${f.oid}`;
      }
    }
    if (!existsSync(blob)) {
      const part = `${blob}.incomplete`;
      const have = await stat(part).then(
        (s) => s.size,
        () => 0,
      );
      if (have > f.size) await unlink(part);
      const start = have > f.size ? 0 : have;
      const fh = await open(part, start > 0 ? 'a' : 'w');
      let written = start,
        discard = false;
      try {
        if (start < f.size) {
          const info = await fileDownloadInfo({
            repo: { type: 'model', name: ref.repo },
            path: f.path,
            revision: commit,
            ...common,
          });
          if (!info) throw new ModelNotFoundError(`${f.path} is listed but cannot be downloaded`);
          const remoteBlob = await downloadFile({
            repo: { type: 'model', name: ref.repo },
            path: f.path,
            revision: commit,
            downloadInfo: info,
            xet: false,
            ...common,
          });
          if (!remoteBlob) throw new ModelNotFoundError(`${f.path} is listed but cannot be downloaded`);
          const reader = remoteBlob.slice(start).stream().getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            // Never past the listed size: an endless body would otherwise fill the disk.
            if (written + value.length > f.size) {
              await reader.cancel().catch(() => {});
              discard = true;
              throw new CheckpointError(
                `the Hub sent more than the ${f.size} bytes it lists for ${f.path}; the download was discarded`,
                { file: part },
              );
            }
            await fh.write(value);
            written += value.length;
            bytesDownloaded += value.length;
            progress('download', f, written, bytesDone + written);
          }
        }
      } catch (e) {
        await fh.close();
        if (discard) await rm(part, { force: true });
        if (signal?.aborted)
          throw new AbortedError(
            `pull was interrupted; ${written} of ${f.size} bytes of ${f.path} are kept, run it again to resume`,
            { cause: e },
          );
        if (e instanceof GptOssError) throw e;
        const reason = networkReason(e);
        const why = `download of ${f.path} broke off at ${written} of ${f.size} bytes (run pull again to resume)`;
        throw reason
          ? new NetworkError(`${why}: ${reason}`, { cause: e, reason })
          : new CheckpointError(`${why}: ${(e as Error).message ?? e}`, { file: part }, { cause: e });
      }
      await fh.close();
      if (written !== f.size)
        throw new CheckpointError(
          `download of ${f.path} ended at ${written} of ${f.size} bytes; run pull again to resume`,
          { file: part },
        );
      const digest = await fileDigest(part, f, (hashed) => progress('check', f, hashed, bytesDone + f.size));
      if (digest !== f.oid) {
        await rm(part, { force: true });
        throw new CheckpointError(
          `${f.path}: checksum mismatch (${f.sha256 ? 'sha256' : 'git sha1'} ${digest}, the Hub says ${f.oid}); the download was discarded`,
          { file: blob },
        );
      }
      await rename(part, blob);
      downloaded = true;
    }
    // snapshots/<commit>/<path> -> ../../blobs/<oid>, relative, as the Hugging Face tools link it.
    const link = join(snap, f.path);
    await mkdir(dirname(link), { recursive: true });
    const target = relative(dirname(link), blob);
    if ((await readlink(link).catch(() => undefined)) !== target) {
      await rm(link, { force: true });
      await symlink(target, link);
    }
    bytesDone += f.size;
    filesDone++;
    result.push({ path: f.path, size: f.size, downloaded, ...(repaired ? { repaired } : {}) });
    progress(downloaded ? 'download' : 'check', f, f.size, bytesDone);
  }
  await mkdir(join(root, 'refs'), { recursive: true });
  // A branch or tag gets its ref file; a commit, or a prefix of one, names itself.
  if (!isCommit(ref.revision) && revision === ref.revision && !commit.startsWith(ref.revision.toLowerCase())) {
    // A branch like refs/pr/1 nests, as the Hugging Face tools store it.
    const refFile = join(root, 'refs', ref.revision);
    await mkdir(dirname(refFile), { recursive: true });
    await writeFile(refFile, commit);
  }
  return {
    repo: ref.repo,
    commit,
    dir: snap,
    layout,
    files: result,
    bytesDownloaded,
    cachedChecked: options.verify ? 'checksum' : 'size',
  };
}

export interface CachedModel {
  repo: string;
  commit: string;
  refs: string[];
  /** The gpt-oss layouts this snapshot holds whole: config and every shard the index names. */
  layouts: WeightLayout[];
  /** What is wrong or missing, when something is: not a gpt-oss model, a layout without a shard. */
  problems: string[];
  /** Bytes of the blobs this snapshot links to. */
  bytes: number;
  dir: string;
}

/** Every ref file under `refs` (refs/pr/1 nests), as [name, commit]. */
async function readRefs(refsDir: string, prefix = ''): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const e of await readdir(join(refsDir, prefix), { withFileTypes: true }).catch(() => [])) {
    const name = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await readRefs(refsDir, name)));
    else out.push([name, (await readFile(join(refsDir, name), 'utf8').catch(() => '')).trim()]);
  }
  return out;
}

const listing = (names: string[], max = 4) =>
  names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;

/**
 * Which gpt-oss layouts a snapshot holds whole, and, for anything less, what it is: another kind of
 * model (its model_type), a config without weights, an index whose shards are not all there (a
 * link whose blob is gone counts as missing). Reads config.json and the index; no tensor.
 */
async function describeSnapshot(dir: string): Promise<{ layouts: WeightLayout[]; problems: string[] }> {
  const layouts: WeightLayout[] = [];
  const problems: string[] = [];
  for (const layout of ['hf', 'original'] as const) {
    const at = layout === 'original' ? join(dir, 'original') : dir;
    const where = layout === 'original' ? 'original/' : '';
    const names = await readdir(at).catch(() => [] as string[]);
    const shards = names.filter((n) => n.endsWith('.safetensors'));
    const hasConfig = names.includes('config.json');
    if (!hasConfig && shards.length === 0) continue;
    if (!hasConfig) {
      problems.push(`${where}*.safetensors without a config.json`);
      continue;
    }
    let json: unknown;
    try {
      json = JSON.parse(await readFile(join(at, 'config.json'), 'utf8'));
    } catch (e) {
      problems.push(`${where}config.json cannot be read: ${(e as Error).message}`);
      continue;
    }
    const modelType = (json as { model_type?: unknown } | null)?.model_type;
    if (modelType !== undefined && modelType !== 'gpt_oss') {
      problems.push(`not a gpt-oss model (${where}config.json: model_type ${JSON.stringify(modelType)})`);
      continue;
    }
    try {
      parseConfig(json, join(at, 'config.json'), { strict: false });
    } catch (e) {
      problems.push(`not a gpt-oss config (${where}config.json: ${(e as Error).message})`);
      continue;
    }
    // The shards the index names, else any *.safetensors; existsSync follows the link to its blob.
    let wanted = shards;
    if (names.includes('model.safetensors.index.json')) {
      try {
        const index = JSON.parse(await readFile(join(at, 'model.safetensors.index.json'), 'utf8')) as {
          weight_map?: Record<string, unknown>;
        };
        wanted = [...new Set(Object.values(index.weight_map ?? {}).map(String))].sort();
      } catch (e) {
        problems.push(`${where}model.safetensors.index.json cannot be read: ${(e as Error).message}`);
        continue;
      }
    }
    const missing = wanted.filter((n) => !existsSync(join(at, n)));
    if (wanted.length === 0) problems.push(`${layout} layout incomplete: ${where}config.json but no *.safetensors`);
    else if (missing.length)
      problems.push(
        `${layout} layout incomplete: ${missing.length} of ${wanted.length} shards missing (${listing(missing.map((n) => where + n))}); gptoss pull resumes it`,
      );
    else layouts.push(layout);
  }
  if (layouts.length === 0 && problems.length === 0) {
    const names = await readdir(dir).catch(() => [] as string[]);
    problems.push(
      names.length ? `not a model checkpoint: no config.json (holds ${listing(names.sort())})` : 'an empty snapshot',
    );
  }
  return { layouts, problems };
}

/** Every cached model snapshot with its size, the layouts it holds and what is wrong with it. No network. */
export async function listCached(cacheDir = hubCacheDir()): Promise<CachedModel[]> {
  const out: CachedModel[] = [];
  const repos = await readdir(cacheDir).catch(() => [] as string[]);
  for (const r of repos.filter((d) => d.startsWith('models--')).sort()) {
    const repo = r.slice('models--'.length).replace('--', '/');
    const refs = new Map<string, string[]>();
    for (const [name, c] of await readRefs(join(cacheDir, r, 'refs'))) refs.set(c, [...(refs.get(c) ?? []), name]);
    for (const commit of await readdir(join(cacheDir, r, 'snapshots')).catch(() => [] as string[])) {
      const dir = join(cacheDir, r, 'snapshots', commit);
      const names = await readdir(dir).catch(() => [] as string[]);
      const orig = await readdir(join(dir, 'original')).catch(() => [] as string[]);
      let bytes = 0;
      for (const p of [...names.map((n) => join(dir, n)), ...orig.map((n) => join(dir, 'original', n))])
        bytes += await stat(p).then(
          (s) => (s.isFile() ? s.size : 0),
          () => 0,
        );
      out.push({ repo, commit, refs: refs.get(commit) ?? [], ...(await describeSnapshot(dir)), bytes, dir });
    }
  }
  return out;
}

/** What `removeCached` deletes: found first, so it can be shown and confirmed. */
export interface RemovePlan {
  repo: string;
  /** The snapshots that go, by commit. */
  commits: string[];
  /** The ref files (branches, tags) that name one of those commits. */
  refs: string[];
  /** Blobs no remaining snapshot links to (and partial downloads, when the whole model goes). */
  blobs: string[];
  /** Bytes freed: those blobs, and files stored in the snapshots themselves. */
  bytes: number;
  /** Every snapshot goes: the whole models--org--name folder is deleted. */
  whole: boolean;
  dir: string;
}

/** Every file under `dir`, recursively, as paths. */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

/** The blob names a snapshot's links point to, and the bytes of files stored in it directly. */
async function snapshotBlobs(snap: string, blobsDir: string): Promise<{ blobs: Set<string>; ownBytes: number }> {
  const blobs = new Set<string>();
  let ownBytes = 0;
  for (const p of await walk(snap)) {
    const target = await readlink(p).catch(() => undefined);
    if (target === undefined)
      ownBytes += await stat(p).then(
        (s) => s.size,
        () => 0,
      );
    else if (resolve(dirname(p), target).startsWith(`${resolve(blobsDir)}/`)) blobs.add(basename(target));
  }
  return { blobs, ownBytes };
}

/**
 * What deleting a cached model would remove, without removing anything: `org/name` is every
 * snapshot of it (the whole folder, partial downloads included); `org/name@rev` one snapshot (rev a
 * branch, a tag, a commit or a unique prefix of 7+ digits), its refs, and the blobs no other
 * snapshot links to. ModelNotFoundError when it is not cached.
 */
export async function planRemove(id: string, cacheDir = hubCacheDir()): Promise<RemovePlan> {
  const ref = parseHubRef(id);
  if (!ref)
    throw new InvalidArgumentError(`${JSON.stringify(id)} is not a Hub model id (org/name or org/name@revision)`);
  const dir = repoDir(cacheDir, ref.repo);
  const snapsDir = join(dir, 'snapshots'),
    blobsDir = join(dir, 'blobs');
  const all = (await readdir(snapsDir).catch(() => [] as string[])).sort();
  if (!existsSync(dir)) throw new ModelNotFoundError(`${ref.repo} is not in the Hugging Face cache (${cacheDir})`);
  let commits = all;
  if (id.includes('@')) {
    const commit = await cachedCommit(ref, cacheDir);
    if (commit === undefined || !all.includes(commit))
      throw new ModelNotFoundError(
        `${id} is not in the cache; cached revisions of ${ref.repo}: ${all.map((c) => c.slice(0, 12)).join(', ') || 'none'}`,
      );
    commits = [commit];
  }
  const refs = (await readRefs(join(dir, 'refs'))).filter(([, c]) => commits.includes(c)).map(([n]) => n);
  const whole = commits.length === all.length;
  let bytes = 0;
  let blobs: string[];
  if (whole) {
    for (const p of await walk(dir))
      bytes += await lstat(p).then(
        (s) => (s.isFile() ? s.size : 0),
        () => 0,
      );
    blobs = await readdir(blobsDir).catch(() => [] as string[]);
  } else {
    const keep = new Set<string>();
    for (const c of all.filter((c) => !commits.includes(c)))
      for (const b of (await snapshotBlobs(join(snapsDir, c), blobsDir)).blobs) keep.add(b);
    const gone = new Set<string>();
    for (const c of commits) {
      const s = await snapshotBlobs(join(snapsDir, c), blobsDir);
      bytes += s.ownBytes;
      for (const b of s.blobs) if (!keep.has(b)) gone.add(b);
    }
    blobs = [...gone].sort();
    for (const b of blobs)
      bytes += await stat(join(blobsDir, b)).then(
        (s) => s.size,
        () => 0,
      );
  }
  return { repo: ref.repo, commits, refs, blobs, bytes, whole, dir };
}

/** Deletes what `planRemove` found. */
export async function removeCached(plan: RemovePlan): Promise<void> {
  if (plan.whole) return void (await rm(plan.dir, { recursive: true, force: true }));
  // Refs first: a ref left naming a deleted snapshot would look cached and fail to load.
  for (const r of plan.refs) await rm(join(plan.dir, 'refs', r), { force: true });
  for (const c of plan.commits) await rm(join(plan.dir, 'snapshots', c), { recursive: true, force: true });
  for (const b of plan.blobs) await rm(join(plan.dir, 'blobs', b), { force: true });
}
