// `gptoss serve` installs strayRejectionHandler (lib/server/stray.ts): a promise rejection that
// no request handled fails that request, never the process (Node ends a process on an unhandled
// rejection when no handler is installed).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { STRAY_KINDS, strayRejectionHandler } from '../lib/server/stray.js';

const strayJs = fileURLToPath(new URL('../dist/server/stray.js', import.meta.url));

/** A process that serves HTTP, meets stray rejections, then asks itself for a page. */
function serveThroughRejections(install: boolean) {
  const script = `
    import { createServer } from 'node:http';
    import { strayRejectionHandler } from ${JSON.stringify(strayJs)};
    if (${install}) process.on('unhandledRejection', strayRejectionHandler());
    const server = createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1', async () => {
      for (let i = 0; i < 3; i++) Promise.reject(new Error('the client went away'));
      Promise.reject(Object.create(null)); // no toString: String() of it throws
      await new Promise((r) => setTimeout(r, 50));
      const r = await fetch('http://127.0.0.1:' + server.address().port + '/');
      console.log('served', r.status, await r.text());
      server.close();
    });`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
}

describe('a rejection nobody handled', () => {
  it('leaves the serving process up, said once per kind', () => {
    const r = serveThroughRejections(true);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('served 200 ok');
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('gptoss: '));
    expect(lines).toEqual([
      'gptoss: a request failed outside its handler (the server carries on): Error: the client went away',
      'gptoss: a request failed outside its handler (the server carries on): a value that cannot be printed',
    ]);
    // Without it, the first one ends the process: the check above is what keeps it up.
    const bare = serveThroughRejections(false);
    expect(bare.status).not.toBe(0);
    expect(bare.stdout).not.toContain('served');
  });

  it('says at most STRAY_KINDS kinds and never throws, whatever it is given or the log does', () => {
    const lines: string[] = [];
    const handle = strayRejectionHandler((l) => lines.push(l));
    for (let i = 0; i < STRAY_KINDS + 50; i++) handle(new Error(`kind ${i}`));
    handle(new Error('kind 0'));
    expect(lines).toHaveLength(STRAY_KINDS);
    const odd = [
      Object.create(null),
      Symbol('s'),
      undefined,
      Object.defineProperty(new Error(), 'message', {
        get() {
          throw new Error('no message');
        },
      }),
    ];
    const fresh = strayRejectionHandler((l) => lines.push(l));
    for (const v of odd) expect(() => fresh(v)).not.toThrow();
    const broken = strayRejectionHandler(() => {
      throw new Error('EPIPE');
    });
    expect(() => broken(new Error('x'))).not.toThrow();
  });
});
