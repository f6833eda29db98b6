// Hub model ids, the Hugging Face cache and `pull`, against a loopback stand-in for the Hub
// serving tiny-b in both layouts. No test touches the real Hub.
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { AbortedError, CheckpointError, InvalidArgumentError, loadModel, NetworkError } from '../lib/index.js';
import {
  cachedSnapshot,
  layoutFiles,
  listCached,
  ModelNotFoundError,
  parseHubRef,
  planRemove,
  pull,
  type PullProgress,
  removeCached,
  resolveModelDir,
} from '../lib/checkpoint/hub.js';
import { fixtures, relErr, tmpDir } from './helpers/checkpoint.js';
import { type FakeHub, startFakeHub } from './helpers/hub-server.js';

const REPO = 'tiny-org/tiny-b';
let hub: FakeHub;
let cache: string;

beforeAll(async () => {
  const repoDir = tmpDir();
  cpSync(join(fixtures, 'tiny-b', 'hf'), repoDir, { recursive: true });
  mkdirSync(join(repoDir, 'original'));
  cpSync(join(fixtures, 'tiny-b', 'original'), join(repoDir, 'original'), { recursive: true });
  hub = await startFakeHub(REPO, repoDir);
});
afterAll(() => hub?.close());
beforeEach(() => {
  cache = tmpDir('gptoss-cache-');
  process.env.HF_HUB_CACHE = cache;
  hub.log.length = 0;
});

const refLogits = () => new Float32Array(readFileSync(join(fixtures, 'tiny-b', 'seq3.fp32.f32')).buffer.slice(0));
const seq3 = () =>
  (
    JSON.parse(readFileSync(join(fixtures, 'tiny-b', 'cases.json'), 'utf8')) as {
      cases: { name: string; tokens: number[] }[];
    }
  ).cases.find((c) => c.name === 'seq3')!.tokens;

describe('model references', () => {
  it('tells Hub ids from paths', () => {
    expect(parseHubRef('openai/gpt-oss-20b')).toEqual({ repo: 'openai/gpt-oss-20b', revision: 'main' });
    expect(parseHubRef('openai/gpt-oss-120b@abc123')).toEqual({ repo: 'openai/gpt-oss-120b', revision: 'abc123' });
    expect(parseHubRef('./models/x')).toBeUndefined();
    expect(parseHubRef('/abs/path')).toBeUndefined();
    expect(parseHubRef(join(fixtures, 'tiny-b', 'hf'))).toBeUndefined();
  });

  it('picks only the engine files of one layout', () => {
    const paths = [
      'config.json',
      'generation_config.json',
      'model-00000-of-00002.safetensors',
      'model.safetensors.index.json',
      'original/config.json',
      'original/model.safetensors',
      'metal/model.bin',
      'tokenizer.json',
    ];
    expect(layoutFiles(paths, 'hf')).toEqual([
      'config.json',
      'model-00000-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
    expect(layoutFiles(paths, 'original')).toEqual(['original/config.json', 'original/model.safetensors']);
  });

  it('an id that is not cached says how to get it, without the network', async () => {
    await expect(resolveModelDir('openai/gpt-oss-20b')).rejects.toThrow(/gptoss pull openai\/gpt-oss-20b/);
    await expect(loadModel('openai/gpt-oss-20b')).rejects.toBeInstanceOf(ModelNotFoundError);
  });
});

describe('gptoss pull', () => {
  it('downloads one layout into the cache layout other tools use, and the model loads from its id', async () => {
    const progress: number[] = [];
    const r = await pull(REPO, { hubUrl: hub.url, onProgress: (p) => progress.push(p.bytesDone) });
    expect(r.commit).toBe(hub.commit);
    expect(r.files.map((f) => f.path).sort()).toEqual([
      'config.json',
      'model-00000-of-00001.safetensors',
      'model-00001-of-00001.safetensors',
      'model.safetensors.index.json',
    ]);
    expect(hub.log.some((l) => l.path.startsWith('original/'))).toBe(false);
    const root = join(cache, 'models--tiny-org--tiny-b');
    expect(readFileSync(join(root, 'refs', 'main'), 'utf8')).toBe(hub.commit);
    const link = join(root, 'snapshots', hub.commit, 'config.json');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/);
    expect(progress.at(-1)).toBe(r.files.reduce((a, f) => a + f.size, 0));
    const m = await loadModel(REPO, { mode: 'fp32' });
    const out = await m.createSession().forward(seq3());
    expect(relErr(out, refLogits())).toBeLessThan(1e-4);
    m.dispose();
  });

  it('a second run is served from the cache with the Hub unreachable', async () => {
    await pull(REPO, { hubUrl: hub.url });
    const again = await pull(REPO, { hubUrl: hub.url });
    expect(again.bytesDownloaded).toBe(0);
    // Loading by id needs no server at all: point the endpoint at a closed port.
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    const m = await loadModel(`${REPO}@main`);
    expect(m.layout).toBe('hf');
    m.dispose();
    const byCommit = await loadModel(`${REPO}@${hub.commit}`);
    byCommit.dispose();
    delete process.env.HF_ENDPOINT;
  });

  it('resumes after the server drops the connection midway', async () => {
    const shard = 'model-00000-of-00001.safetensors';
    hub.dropAfter.set(shard, 100_000);
    const first = await pull(REPO, { hubUrl: hub.url }).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(NetworkError); // the connection broke, not the checkpoint
    expect((first as Error).message).toMatch(/broke off at \d+ of \d+ bytes \(run pull again to resume\)/);
    const blobs = join(cache, 'models--tiny-org--tiny-b', 'blobs');
    const partial = (await import('node:fs')).readdirSync(blobs).find((n) => n.endsWith('.incomplete'))!;
    expect(statSync(join(blobs, partial)).size).toBeGreaterThanOrEqual(100_000);
    hub.log.length = 0;
    const r = await pull(REPO, { hubUrl: hub.url });
    const resumed = hub.log.find((l) => l.path === shard && l.range && !l.range.startsWith('bytes=0-'));
    expect(resumed?.range).toMatch(/^bytes=(\d+)-/);
    expect(Number(/^bytes=(\d+)-/.exec(resumed!.range!)![1])).toBeGreaterThanOrEqual(100_000);
    expect(r.bytesDownloaded).toBeLessThan(r.files.reduce((a, f) => a + f.size, 0));
    const m = await loadModel(REPO, { mode: 'fp32' });
    expect(relErr(await m.createSession().forward(seq3()), refLogits())).toBeLessThan(1e-4);
    m.dispose();
  });

  it('corrupted bytes are caught by the checksum and the file is not used', async () => {
    const shard = 'model-00001-of-00001.safetensors';
    hub.corrupt.add(shard);
    try {
      await expect(pull(REPO, { hubUrl: hub.url })).rejects.toThrow(/checksum mismatch.*discarded/);
    } finally {
      hub.corrupt.delete(shard);
    }
    const snap = await cachedSnapshot({ repo: REPO, revision: hub.commit }, cache);
    expect(snap === undefined || !existsSync(join(snap, shard))).toBe(true);
    await expect(loadModel(REPO)).rejects.toBeInstanceOf(CheckpointError);
    // A clean retry then succeeds.
    await pull(REPO, { hubUrl: hub.url });
    (await loadModel(REPO)).dispose();
  });

  it('the original layout comes from original/ only', async () => {
    const r = await pull(REPO, { hubUrl: hub.url, layout: 'original' });
    expect(r.files.map((f) => f.path).sort()).toEqual(['original/config.json', 'original/model.safetensors']);
    const m = await loadModel(REPO);
    expect(m.layout).toBe('original');
    m.dispose();
    expect((await listCached(cache)).map((c) => [c.repo, c.layouts])).toEqual([[REPO, ['original']]]);
  });

  it('a missing repo and a missing revision are typed errors', async () => {
    await expect(pull('nobody/nothing', { hubUrl: hub.url })).rejects.toThrow(ModelNotFoundError);
    await expect(pull('nobody/nothing', { hubUrl: hub.url })).rejects.toThrow(/does not exist on the Hub/);
    await expect(pull(`${REPO}@v9`, { hubUrl: hub.url })).rejects.toThrow(
      /revision v9 of tiny-org\/tiny-b does not exist/,
    );
  });

  it('a Hub that cannot be reached is a network error with its cause, not a bad checkpoint', async () => {
    const { createServer } = await import('node:net');
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r)); // nothing listens there now
    const err = await pull(REPO, { hubUrl: `http://127.0.0.1:${port}` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err).toMatchObject({ code: 'ERR_NETWORK', reason: 'ECONNREFUSED' });
    expect((err as Error).message).toBe(
      `cannot reach the Hub at http://127.0.0.1:${port} (ECONNREFUSED); a model already in the cache loads without it`,
    );
  });

  it('a body longer than the listed size is cut off there and discarded, never written out (issue 20)', async () => {
    const shard = 'model-00000-of-00001.safetensors';
    const size = hub.files.find((f) => f.path === shard)!.data.length;
    hub.oversend.set(shard, 64 * 2 ** 20); // as good as endless for a test
    try {
      const e = await pull(REPO, { hubUrl: hub.url }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(CheckpointError);
      expect((e as Error).message).toMatch(
        new RegExp(`sent more than the ${size} bytes it lists for ${shard}; the download was discarded`),
      );
    } finally {
      hub.oversend.delete(shard);
    }
    const blobs = join(cache, 'models--tiny-org--tiny-b', 'blobs');
    const largest = Math.max(...hub.files.map((f) => f.data.length));
    for (const n of readdirSync(blobs)) expect(statSync(join(blobs, n)).size, n).toBeLessThanOrEqual(largest);
    (await pull(REPO, { hubUrl: hub.url })).files.forEach((f) => expect(f.size).toBeGreaterThan(0));
  });

  it('only revision names the Hub allows are used: nothing outside the cache is written or read as a commit (issue 20)', async () => {
    for (const rev of [
      '../../x',
      '..',
      'a/../b',
      '/etc',
      'a//b',
      'a/',
      '.hidden',
      'a/.b',
      'x.lock',
      'end.',
      'a b',
      'a\u0000b',
      'a\nb',
      'a~1',
      'a^',
      'a:b',
      'a?',
      'a*',
      'a[',
      'a\\b',
      '@',
      'a@{1}',
      '',
      'x'.repeat(256),
    ])
      expect(() => parseHubRef(`${REPO}@${rev}`), JSON.stringify(rev)).toThrow(InvalidArgumentError);
    for (const rev of ['main', 'v1.0', 'refs/pr/1', 'feature/x-y', 'a@b', hub.commit])
      expect(parseHubRef(`${REPO}@${rev}`)).toEqual({ repo: REPO, revision: rev });
    await expect(pull(`${REPO}@../../x`, { hubUrl: hub.url })).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(existsSync(join(cache, 'x'))).toBe(false);
    // A file outside the repo's refs/ that holds a commit is not taken for a ref.
    await pull(REPO, { hubUrl: hub.url });
    writeFileSync(join(cache, 'elsewhere'), hub.commit);
    await expect(loadModel(`${REPO}@../../elsewhere`)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await cachedSnapshot({ repo: REPO, revision: '../../elsewhere' }, cache)).toBeUndefined();
    // Nor does a ref file name anything but a commit.
    writeFileSync(join(cache, 'models--tiny-org--tiny-b', 'refs', 'evil'), `../../../..${cache}`);
    expect(await cachedSnapshot({ repo: REPO, revision: 'evil' }, cache)).toBeUndefined();
  });

  it('an aborted pull stops at once and leaves a resumable state', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(pull(REPO, { hubUrl: hub.url, signal: ac.signal })).rejects.toBeInstanceOf(AbortedError);
    await pull(REPO, { hubUrl: hub.url });
  });

  it('gptoss list shows cached models with sizes and layouts', async () => {
    await pull(REPO, { hubUrl: hub.url });
    const list = await listCached(cache);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ repo: REPO, commit: hub.commit, refs: ['main'], layouts: ['hf'] });
    expect(list[0].bytes).toBe(
      hub.files.filter((f) => !f.path.startsWith('original/')).reduce((a, f) => a + f.data.length, 0),
    );
  });
});

/** `gptoss ...` as a user runs it, against this test's cache and the fake Hub; stdin not a terminal. */
async function cli(args: string[], env: Record<string, string> = {}) {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const main = new URL('../dist/cli/main.js', import.meta.url).pathname;
  try {
    const r = await promisify(execFile)(process.execPath, [main, ...args], {
      env: { ...process.env, HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url, ...env },
    });
    return { code: 0, ...r };
  } catch (e) {
    return e as { code: number; stdout: string; stderr: string };
  }
}

const repoRoot = () => join(cache, 'models--tiny-org--tiny-b');

/** A second cached revision of REPO: the first one's links, one of them to a blob of its own. */
function secondRevision(commit: string): string {
  const root = repoRoot();
  const snap = join(root, 'snapshots', commit);
  cpSync(join(root, 'snapshots', hub.commit), snap, { recursive: true, verbatimSymlinks: true });
  writeFileSync(join(root, 'blobs', 'e'.repeat(64)), 'only the second revision links to this');
  symlinkSync(`../../blobs/${'e'.repeat(64)}`, join(snap, 'extra.txt'));
  return snap;
}

describe('revisions by commit prefix', () => {
  it('any unique prefix of 7 or more digits of a cached commit names it, wherever a revision is taken', async () => {
    await pull(REPO, { hubUrl: hub.url });
    const snap = join(repoRoot(), 'snapshots', hub.commit);
    for (const n of [7, 12, 39]) {
      expect(await resolveModelDir(`${REPO}@${hub.commit.slice(0, n)}`), `${n} digits`).toBe(snap);
      expect(await resolveModelDir(`${REPO}@${hub.commit.slice(0, n).toUpperCase()}`)).toBe(snap);
    }
    // Shorter than git abbreviates: not taken for a commit.
    await expect(resolveModelDir(`${REPO}@${hub.commit.slice(0, 6)}`)).rejects.toBeInstanceOf(ModelNotFoundError);
    // What `gptoss list` prints loads.
    const m = await loadModel(`${REPO}@${hub.commit.slice(0, 12)}`);
    m.dispose();
    // pull asks the Hub for the full commit (the fake Hub knows no prefix) and writes no ref named by the prefix.
    const again = await pull(`${REPO}@${hub.commit.slice(0, 12)}`, { hubUrl: hub.url });
    expect(again.commit).toBe(hub.commit);
    expect(readdirSync(join(repoRoot(), 'refs'))).toEqual(['main']);
    // Two cached commits that share the prefix: an error naming both.
    const other = `${hub.commit.slice(0, 8)}${'0'.repeat(32)}`;
    secondRevision(other);
    const e = await resolveModelDir(`${REPO}@${hub.commit.slice(0, 8)}`).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect((e as Error).message).toMatch(/2 cached revisions start with [0-9a-f]{8} .*give more of the commit/);
    expect(await resolveModelDir(`${REPO}@${hub.commit.slice(0, 9)}`)).toBe(snap);
  });
});

describe('pull of a model already in the cache', () => {
  it('downloads nothing, reports no download progress, and says so', async () => {
    await pull(REPO, { hubUrl: hub.url });
    hub.log.length = 0;
    const events: PullProgress[] = [];
    const r = await pull(REPO, { hubUrl: hub.url, onProgress: (p) => events.push(p) });
    expect(hub.log).toEqual([]);
    expect(r.files.every((f) => !f.downloaded)).toBe(true);
    expect(r.cachedChecked).toBe('size');
    expect(events.every((p) => p.phase === 'check' && p.bytesDownloaded === 0)).toBe(true);
    expect(events.at(-1)!.bytesDone).toBe(events.at(-1)!.bytesTotal);

    const c = await cli(['pull', REPO]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(
      new RegExp(
        `^${REPO}: already in the cache, nothing downloaded: 4 files of the hf layout at ${hub.commit.slice(0, 12)} `,
      ),
    );
    expect(c.stdout).toMatch(/; every size matches the Hub's listing \(--verify recomputes the checksums\)\n$/);
    expect(c.stdout).not.toMatch(/GB downloaded|MB\/s/);
    const v = await cli(['pull', REPO, '--verify']);
    expect(v.stdout).toMatch(
      /already in the cache, nothing downloaded: .*every checksum recomputed and matching the Hub/,
    );
  });

  it('a damaged cached file is found (size always, checksum with verify) and downloaded again', async () => {
    await pull(REPO, { hubUrl: hub.url });
    const shard = 'model-00000-of-00001.safetensors';
    const blob = join(repoRoot(), 'snapshots', hub.commit, shard);
    // Same size, one byte changed: only the checksum sees it.
    const data = readFileSync(blob);
    data[100] ^= 0xff;
    writeFileSync(blob, data);
    expect((await pull(REPO, { hubUrl: hub.url })).files.every((f) => !f.downloaded)).toBe(true);
    const events: PullProgress[] = [];
    const v = await pull(REPO, { hubUrl: hub.url, verify: true, onProgress: (p) => events.push(p) });
    expect(v.cachedChecked).toBe('checksum');
    const fixed = v.files.find((f) => f.path === shard)!;
    expect(fixed).toMatchObject({
      downloaded: true,
      repaired: expect.stringMatching(/sha256 [0-9a-f]{64}, the Hub says/),
    });
    expect(events.some((p) => p.phase === 'check' && p.file === shard && p.fileBytes === fixed.size)).toBe(true);
    const m = await loadModel(REPO, { mode: 'fp32' });
    expect(relErr(await m.createSession().forward(seq3()), refLogits())).toBeLessThan(1e-4);
    m.dispose();
    // Cut short: the size differs from the Hub's, found without --verify.
    writeFileSync(blob, data.subarray(0, 1000));
    const c = await cli(['pull', REPO]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stderr).toContain(
      `${shard} was damaged (in the cache with 1000 bytes, the Hub lists ${fixed.size}); downloaded again`,
    );
    expect(statSync(blob).size).toBe(fixed.size);
  });
});

describe('gptoss list says what each cached snapshot is', () => {
  it('another model, a layout missing a shard, a snapshot with no checkpoint', async () => {
    await pull(REPO, { hubUrl: hub.url });
    // A shard's blob gone: the link dangles.
    const shard = 'model-00001-of-00001.safetensors';
    rmSync(
      join(
        repoRoot(),
        'blobs',
        readlinkSync(join(repoRoot(), 'snapshots', hub.commit, shard))
          .split('/')
          .pop()!,
      ),
    );
    // Another model family, and a repo with no config at all.
    const llama = join(cache, 'models--meta--llama', 'snapshots', 'a'.repeat(40));
    mkdirSync(llama, { recursive: true });
    writeFileSync(join(llama, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 8 }));
    writeFileSync(join(llama, 'model.safetensors'), '');
    const docs = join(cache, 'models--someone--docs', 'snapshots', 'b'.repeat(40));
    mkdirSync(docs, { recursive: true });
    writeFileSync(join(docs, 'README.md'), 'hi');
    writeFileSync(join(docs, 'tokenizer.json'), '{}');

    const byRepo = new Map((await listCached(cache)).map((m) => [m.repo, m]));
    expect(byRepo.get('meta/llama')).toMatchObject({
      layouts: [],
      problems: ['not a gpt-oss model (config.json: model_type "llama")'],
    });
    expect(byRepo.get(REPO)).toMatchObject({
      layouts: [],
      problems: [`hf layout incomplete: 1 of 2 shards missing (${shard}); gptoss pull resumes it`],
    });
    expect(byRepo.get('someone/docs')!.problems).toEqual([
      'not a model checkpoint: no config.json (holds README.md, tokenizer.json)',
    ]);
    const l = await cli(['list']);
    expect(l.stdout).not.toContain('(incomplete)');
    expect(l.stdout).toMatch(
      /^meta\/llama {2}aaaaaaaaaaaa {2}0\.0 MB {2}not a gpt-oss model \(config\.json: model_type "llama"\)$/m,
    );
    expect(l.stdout).toMatch(
      new RegExp(`^${REPO}@main {2}${hub.commit.slice(0, 12)} .* hf layout incomplete: 1 of 2 shards missing`, 'm'),
    );
    // pull completes it, and list then shows the layout.
    await pull(REPO, { hubUrl: hub.url });
    expect((await listCached(cache)).find((m) => m.repo === REPO)).toMatchObject({ layouts: ['hf'], problems: [] });
  });
});

describe('gptoss rm', () => {
  it('deletes one revision (its snapshot, refs and the blobs no other revision links to), or the whole model', async () => {
    await pull(REPO, { hubUrl: hub.url });
    const other = 'c'.repeat(40);
    secondRevision(other);
    writeFileSync(join(repoRoot(), 'refs', 'v2'), other);
    const blobsBefore = readdirSync(join(repoRoot(), 'blobs')).sort();

    const plan = await planRemove(`${REPO}@v2`, cache);
    expect(plan).toMatchObject({ commits: [other], refs: ['v2'], blobs: ['e'.repeat(64)], whole: false });
    expect(plan.bytes).toBe('only the second revision links to this'.length);
    // Not a terminal, no --yes: refused, nothing deleted.
    const refused = await cli(['rm', `${REPO}@${other.slice(0, 7)}`]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/stdin is not a terminal to confirm on: pass --yes/);
    expect(existsSync(join(repoRoot(), 'snapshots', other))).toBe(true);

    const one = await cli(['rm', `${REPO}@${other.slice(0, 7)}`, '--yes']);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(
      /^deleted tiny-org\/tiny-b@ccccccc: the snapshot cccccccccccc, ref v2 and 1 blob no other revision uses/,
    );
    expect(existsSync(join(repoRoot(), 'snapshots', other))).toBe(false);
    expect(existsSync(join(repoRoot(), 'refs', 'v2'))).toBe(false);
    expect(readdirSync(join(repoRoot(), 'blobs')).sort()).toEqual(blobsBefore.filter((b) => b !== 'e'.repeat(64)));
    // The other revision is whole and loads.
    (await loadModel(REPO)).dispose();

    const missing = await cli(['rm', `${REPO}@v9`, '--yes']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /tiny-org\/tiny-b@v9 is not in the cache; cached revisions of tiny-org\/tiny-b: [0-9a-f]{12}/,
    );

    const all = await planRemove(REPO, cache);
    expect(all.whole).toBe(true);
    await removeCached(all);
    expect(existsSync(repoRoot())).toBe(false);
    expect(await listCached(cache)).toEqual([]);
    await expect(planRemove(REPO, cache)).rejects.toBeInstanceOf(ModelNotFoundError);
  });
});

describe('the pull, list and inspect commands', () => {
  it('pull fills the cache quietly when not a terminal; list and inspect then see the model', async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const run = promisify(execFile);
    const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
    const env = { ...process.env, HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url };
    const p = await run(process.execPath, [cli, 'pull', REPO], { env });
    expect(p.stdout).toMatch(new RegExp(`${REPO}: 4 files of the hf layout at ${hub.commit.slice(0, 12)}`));
    expect(p.stderr).toBe(''); // no progress bar without a terminal
    const l = await run(process.execPath, [cli, 'list'], { env });
    expect(l.stdout).toMatch(/tiny-org\/tiny-b@main .* layouts: hf/);
    const i = await run(process.execPath, [cli, 'inspect', REPO, '--json'], {
      env: { ...env, HF_ENDPOINT: 'http://127.0.0.1:9' },
    });
    const info = JSON.parse(i.stdout);
    expect(info.layout).toBe('hf');
    expect(info.memory).toMatchObject({ device: 'cpu', fits: true });
    expect(info.memory.weightsBytes).toBe(info.bytes.total);
  });

  it('without --model, chat names the default model and how to get it, in one line', async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
    const r = await promisify(execFile)(process.execPath, [cli, 'generate', 'hi'], {
      env: { ...process.env, HF_HUB_CACHE: cache },
    }).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(1);
    const err = (r as { stderr: string }).stderr.trim();
    expect(err.split('\n')).toHaveLength(1);
    expect(err).toContain('gptoss pull openai/gpt-oss-20b');
  });
});

describe('memory estimate', () => {
  it('a model the device cannot hold is refused before anything is allocated, with the figures', async () => {
    const { createSyntheticModel, InsufficientMemoryError, weightBytes, presetConfig } =
      await import('../lib/index.js');
    // The 20b total_size in kernels/MODEL.md, "Hugging Face layout".
    expect(weightBytes(presetConfig('20b'))).toBe(13_761_264_768);
    expect(weightBytes(presetConfig('120b'))).toBe(65_248_815_744);
    const { totalmem } = await import('node:os');
    if (totalmem() < 65e9) {
      const e = await createSyntheticModel({ preset: '120b' }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(InsufficientMemoryError);
      expect((e as InstanceType<typeof InsufficientMemoryError>).estimate).toMatchObject({
        weightsBytes: 65_248_815_744,
        fits: false,
      });
    }
  });
});
