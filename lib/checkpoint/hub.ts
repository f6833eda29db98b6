// Model references that name a Hugging Face Hub repo ("openai/gpt-oss-20b", "org/name@rev"),
// resolved through the standard Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
// ~/.cache/huggingface/hub; models--org--name/{blobs,snapshots,refs}) so weights other tools
// downloaded are found without the network; and `pull`, which fills that cache with what the
// engine needs, resumably, checking every file against the Hub's checksums. Hub calls go
// through the maintained @huggingface/hub client.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import {
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
import { dirname, join, relative } from 'node:path';

import { downloadFile, fileDownloadInfo, listFiles, modelInfo } from '@huggingface/hub';

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

/** The snapshot directory of a cached revision, or undefined. No network. */
export async function cachedSnapshot(ref: HubRef, cacheDir = hubCacheDir()): Promise<string | undefined> {
  const dir = repoDir(cacheDir, ref.repo);
  let commit = ref.revision;
  if (!isCommit(commit)) {
    if (!isValidRevision(ref.revision)) return undefined;
    try {
      commit = (await readFile(join(dir, 'refs', ref.revision), 'utf8')).trim();
    } catch {
      return undefined;
    }
    // What a ref file holds names a directory: only a commit may.
    if (!isCommit(commit)) return undefined;
  }
  const snap = join(dir, 'snapshots', commit);
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
  file: string;
  fileBytes: number;
  fileSize: number;
  bytesDone: number;
  bytesTotal: number;
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
  onProgress?: (p: PullProgress) => void;
}

export interface PullResult {
  repo: string;
  commit: string;
  dir: string;
  layout: WeightLayout;
  files: { path: string; size: number; downloaded: boolean }[];
  bytesDownloaded: number;
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
async function fileDigest(path: string, f: RemoteFile): Promise<string> {
  const h = f.sha256 ? createHash('sha256') : createHash('sha1').update(`blob ${f.size}\0`);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
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

  let commit: string;
  const remote: RemoteFile[] = [];
  try {
    const info = await modelInfo({ name: ref.repo, revision: ref.revision, additionalFields: ['sha'], ...common });
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
  for (const f of files) {
    const blob = join(blobs, f.oid);
    let downloaded = false;
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
            options.onProgress?.({
              file: f.path,
              fileBytes: written,
              fileSize: f.size,
              bytesDone: bytesDone + written,
              bytesTotal,
              filesDone,
              filesTotal: files.length,
            });
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
      const digest = await fileDigest(part, f);
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
    result.push({ path: f.path, size: f.size, downloaded });
    options.onProgress?.({
      file: f.path,
      fileBytes: f.size,
      fileSize: f.size,
      bytesDone,
      bytesTotal,
      filesDone,
      filesTotal: files.length,
    });
  }
  await mkdir(join(root, 'refs'), { recursive: true });
  if (!isCommit(ref.revision)) {
    // A branch like refs/pr/1 nests, as the Hugging Face tools store it.
    const refFile = join(root, 'refs', ref.revision);
    await mkdir(dirname(refFile), { recursive: true });
    await writeFile(refFile, commit);
  }
  return { repo: ref.repo, commit, dir: snap, layout, files: result, bytesDownloaded };
}

export interface CachedModel {
  repo: string;
  commit: string;
  refs: string[];
  layouts: WeightLayout[];
  /** Bytes of the blobs this snapshot links to. */
  bytes: number;
  dir: string;
}

/** Every cached model snapshot with its size and the layouts it holds. No network. */
export async function listCached(cacheDir = hubCacheDir()): Promise<CachedModel[]> {
  const out: CachedModel[] = [];
  const repos = await readdir(cacheDir).catch(() => [] as string[]);
  for (const r of repos.filter((d) => d.startsWith('models--')).sort()) {
    const repo = r.slice('models--'.length).replace('--', '/');
    const refs = new Map<string, string[]>();
    for (const name of await readdir(join(cacheDir, r, 'refs')).catch(() => [] as string[])) {
      const c = (await readFile(join(cacheDir, r, 'refs', name), 'utf8').catch(() => '')).trim();
      refs.set(c, [...(refs.get(c) ?? []), name]);
    }
    for (const commit of await readdir(join(cacheDir, r, 'snapshots')).catch(() => [] as string[])) {
      const dir = join(cacheDir, r, 'snapshots', commit);
      const names = await readdir(dir).catch(() => [] as string[]);
      const orig = await readdir(join(dir, 'original')).catch(() => [] as string[]);
      const layouts: WeightLayout[] = [];
      if (names.includes('config.json') && names.some((n) => n.endsWith('.safetensors'))) layouts.push('hf');
      if (orig.includes('config.json') && orig.some((n) => n.endsWith('.safetensors'))) layouts.push('original');
      let bytes = 0;
      for (const p of [...names.map((n) => join(dir, n)), ...orig.map((n) => join(dir, 'original', n))])
        bytes += await stat(p).then(
          (s) => (s.isFile() ? s.size : 0),
          () => 0,
        );
      out.push({ repo, commit, refs: refs.get(commit) ?? [], layouts, bytes, dir });
    }
  }
  return out;
}
