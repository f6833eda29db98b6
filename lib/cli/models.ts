// `gptoss pull`, `list` and `rm`: the models in the Hugging Face cache.
import { createInterface } from 'node:readline/promises';

import { InvalidArgumentError as CommanderArgError } from 'commander';

import {
  type CachedModel,
  DEFAULT_MODEL,
  hubCacheDir,
  listCached,
  planRemove,
  pull,
  removeCached,
  type RemovePlan,
} from '../checkpoint/hub.js';
import { byteBar, formatBytes } from './progress.js';

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export async function runPull(ref: string | undefined, o: { layout: 'hf' | 'original'; verify?: boolean }) {
  const id = ref ?? DEFAULT_MODEL;
  const ac = new AbortController();
  const onInterrupt = () => ac.abort();
  process.on('SIGINT', onInterrupt);
  const bar = byteBar('{label} |{bar}| {percentage}% {done}/{size} {rate} ETA {eta_formatted}');
  // The bar shows work: bytes arriving, or checksums recomputed (--verify). A model already in the
  // cache shows none, and the speed is of bytes that came over the network, never cached ones.
  let firstByte: number | undefined;
  try {
    const r = await pull(id, {
      layout: o.layout,
      verify: o.verify,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.phase === 'download' && p.bytesDownloaded > 0) firstByte ??= Date.now();
        if (firstByte === undefined && !(o.verify && p.phase === 'check' && p.fileBytes < p.fileSize)) return;
        const seconds = firstByte === undefined ? 0 : (Date.now() - firstByte) / 1e3;
        const rate =
          p.phase === 'check'
            ? 'checking'
            : seconds > 0.5
              ? `${(p.bytesDownloaded / 1e6 / seconds).toFixed(1)} MB/s`
              : '';
        bar.update(p.bytesDone, p.bytesTotal, {
          label: `${p.phase === 'check' ? 'checking ' : ''}${p.file}`.padEnd(40).slice(0, 40),
          rate,
        });
      },
    });
    bar.stop();
    const total = r.files.reduce((a, f) => a + f.size, 0);
    const fetched = r.files.filter((f) => f.downloaded);
    const where = `${plural(r.files.length, 'file')} of the ${r.layout} layout at ${r.commit.slice(0, 12)} in ${r.dir}`;
    for (const f of r.files.filter((x) => x.repaired))
      process.stderr.write(`${f.path} was damaged (${f.repaired}); downloaded again\n`);
    if (fetched.length === 0)
      process.stdout.write(
        `${id}: already in the cache, nothing downloaded: ${where}, ${formatBytes(total, total)}; ${
          r.cachedChecked === 'checksum'
            ? 'every checksum recomputed and matching the Hub'
            : "every size matches the Hub's listing (--verify recomputes the checksums)"
        }\n`,
      );
    else
      process.stdout.write(
        `${id}: ${where} (${formatBytes(r.bytesDownloaded, r.bytesDownloaded)} downloaded, ${plural(fetched.length, 'file')}${
          fetched.length < r.files.length ? `; ${r.files.length - fetched.length} already in the cache` : ''
        }; checksums verified)\n`,
      );
  } finally {
    bar.stop();
    process.off('SIGINT', onInterrupt);
  }
}

/** One line of `gptoss list`: what `--model` takes, the commit, the size, and what it holds. */
export function listLine(m: CachedModel): string {
  const what = m.layouts.length ? `layouts: ${m.layouts.join(', ')}` : m.problems.join('; ');
  const extra = m.layouts.length && m.problems.length ? ` (also: ${m.problems.join('; ')})` : '';
  return `${m.repo}${m.refs.length ? `@${m.refs.join(',')}` : ''}  ${m.commit.slice(0, 12)}  ${formatBytes(m.bytes, m.bytes)}  ${what}${extra}`;
}

export async function runList(o: { json?: boolean }) {
  const models = await listCached();
  if (o.json) return void process.stdout.write(`${JSON.stringify(models)}\n`);
  if (models.length === 0)
    return void process.stdout.write(`no models in ${hubCacheDir()}; get one with: gptoss pull ${DEFAULT_MODEL}\n`);
  process.stdout.write(`${models.map(listLine).join('\n')}\n`);
  process.stdout.write(
    `(a model by revision: --model org/name@<branch, or 7 or more digits of the commit>; in ${hubCacheDir()})\n`,
  );
}

/** What `gptoss rm` is about to delete, in words. */
export function describeRemoval(id: string, p: RemovePlan): string {
  const snaps = p.commits.map((c) => c.slice(0, 12)).join(', ');
  return p.whole
    ? `${p.repo}: every cached revision (${snaps || 'no snapshot'}), its refs and blobs: ${formatBytes(p.bytes, p.bytes)} in ${p.dir}`
    : `${id}: the snapshot ${snaps}${p.refs.length ? `, ${p.refs.length > 1 ? 'refs' : 'ref'} ${p.refs.join(', ')}` : ''} and ${plural(p.blobs.length, 'blob')} no other revision uses: ${formatBytes(p.bytes, p.bytes)}`;
}

export async function runRm(id: string, o: { yes?: boolean }) {
  const plan = await planRemove(id);
  const what = describeRemoval(id, plan);
  if (!o.yes) {
    if (!process.stdin.isTTY)
      throw new CommanderArgError(`rm: would delete ${what}; stdin is not a terminal to confirm on: pass --yes`);
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`delete ${what}? [y/N] `).finally(() => rl.close());
    if (!/^y(es)?$/i.test(answer.trim())) return void process.stderr.write('nothing deleted\n');
  }
  await removeCached(plan);
  process.stdout.write(`deleted ${what}\n`);
}
