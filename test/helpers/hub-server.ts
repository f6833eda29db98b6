// A loopback stand-in for the Hugging Face Hub: the endpoints @huggingface/hub calls (model info,
// file tree, resolve with Range), serving a fixture checkpoint, with faults on request.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface HubFile {
  path: string;
  data: Buffer;
  lfs: boolean;
}

export interface FakeHub {
  url: string;
  commit: string;
  files: HubFile[];
  /** Requests for file bytes: path and the Range header. */
  log: { path: string; range: string | undefined }[];
  /** Next request for this path sends this many bytes, then drops the connection. */
  dropAfter: Map<string, number>;
  /** Requests for these paths get one byte flipped. */
  corrupt: Set<string>;
  /** Requests for file bytes of this path send this many bytes past the file's end (chunked, no length). */
  oversend: Map<string, number>;
  close(): Promise<void>;
}

function walk(dir: string, prefix = ''): string[] {
  return readdirSync(dir).flatMap((n) =>
    statSync(join(dir, n)).isDirectory() ? walk(join(dir, n), `${prefix}${n}/`) : [`${prefix}${n}`],
  );
}

/** Serves `repoDir` (files laid out as in a Hub repo) as repo `repo` at revision main. */
export async function startFakeHub(repo: string, repoDir: string): Promise<FakeHub> {
  const files: HubFile[] = walk(repoDir).map((path) => ({
    path,
    data: readFileSync(join(repoDir, path)),
    lfs: path.endsWith('.safetensors'),
  }));
  const commit = createHash('sha1')
    .update(files.map((f) => f.path).join())
    .digest('hex');
  const hub: Omit<FakeHub, 'url' | 'close'> = {
    commit,
    files,
    log: [],
    dropAfter: new Map(),
    corrupt: new Set(),
    oversend: new Map(),
  };
  const notFound = (res: ServerResponse, code: string, error: string) => {
    res.writeHead(404, { 'Content-Type': 'application/json', 'X-Error-Code': code });
    res.end(JSON.stringify({ error }));
  };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const p = decodeURIComponent(u.pathname);
    const revOk = (rev: string) => rev === 'main' || rev === commit;
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(p);
    if (m) {
      if (m[1] !== repo) return notFound(res, 'RepoNotFound', 'Repository not found');
      if (!revOk(m[2])) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${m[2]}`);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(
        JSON.stringify({
          _id: 'x',
          id: repo,
          sha: commit,
          private: false,
          downloads: 0,
          gated: false,
          likes: 0,
          lastModified: '2025-08-05T00:00:00Z',
        }),
      );
    }
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(p);
    if (m) {
      if (m[1] !== repo) return notFound(res, 'RepoNotFound', 'Repository not found');
      if (!revOk(m[2])) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${m[2]}`);
      const dirs = [...new Set(files.filter((f) => f.path.includes('/')).map((f) => f.path.split('/')[0]))];
      const list = [
        ...dirs.map((d) => ({ type: 'directory', path: d, size: 0, oid: createHash('sha1').update(d).digest('hex') })),
        ...files.map((f) => ({
          type: 'file',
          path: f.path,
          size: f.data.length,
          oid: createHash('sha1').update(`blob ${f.data.length}\0`).update(f.data).digest('hex'),
          ...(f.lfs && {
            lfs: { oid: createHash('sha256').update(f.data).digest('hex'), size: f.data.length, pointerSize: 134 },
          }),
        })),
      ];
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify(list));
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p);
    if (m) {
      if (m[1] !== repo) return notFound(res, 'RepoNotFound', 'Repository not found');
      if (!revOk(m[2])) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${m[2]}`);
      const f = files.find((x) => x.path === m![3]);
      if (!f) return notFound(res, 'EntryNotFound', 'Entry not found');
      const range = req.headers.range;
      hub.log.push({ path: f.path, range });
      let data = f.data;
      if (hub.corrupt.has(f.path)) {
        data = Buffer.from(data);
        data[data.length >> 1] ^= 0xff;
      }
      const sha = f.lfs
        ? createHash('sha256').update(f.data).digest('hex')
        : createHash('sha1').update(`blob ${f.data.length}\0`).update(f.data).digest('hex');
      let start = 0,
        end = data.length - 1;
      const r = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
      if (r) {
        start = Number(r[1]);
        end = r[2] ? Math.min(Number(r[2]), data.length - 1) : data.length - 1;
      }
      const body = data.subarray(start, end + 1);
      const extra = range === 'bytes=0-0' ? undefined : hub.oversend.get(f.path);
      if (extra !== undefined) {
        // As a hostile endpoint would: the body, then more for as long as the client reads.
        res.writeHead(r ? 206 : 200, {
          'Content-Type': 'application/octet-stream',
          ETag: `"${sha}"`,
          'X-Repo-Commit': commit,
        });
        res.write(body);
        const chunk = Buffer.alloc(64 * 1024, 0x41);
        let left = extra;
        const more = () => {
          while (left > 0 && !res.destroyed) {
            left -= chunk.length;
            if (!res.write(chunk)) return void res.once('drain', more);
          }
          if (!res.destroyed) res.end();
        };
        return more();
      }
      res.writeHead(r ? 206 : 200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(body.length),
        ...(r && { 'Content-Range': `bytes ${start}-${end}/${data.length}` }),
        ETag: `"${sha}"`,
        ...(f.lfs && { 'X-Linked-Etag': `"${sha}"`, 'X-Linked-Size': String(data.length) }),
        'X-Repo-Commit': commit,
      });
      const drop = hub.dropAfter.get(f.path);
      if (drop !== undefined && body.length > drop) {
        hub.dropAfter.delete(f.path);
        res.write(body.subarray(0, drop), () => setTimeout(() => res.destroy(), 20));
        return;
      }
      return res.end(body);
    }
    res.writeHead(404);
    res.end();
  };
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    ...hub,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  } as FakeHub;
}
