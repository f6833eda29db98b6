// What `npm install node-gpt-oss` pulls must run on every Node version package.json declares: a
// runtime dependency that needs a newer Node would make npm warn EBADENGINE on a supported one.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));

describe('package', () => {
  it('declares a Node range the running Node is in', () => {
    expect(semver.satisfies(process.version, pkg.engines.node)).toBe(true);
  });

  it('pulls no runtime dependency that needs a newer Node than it declares', () => {
    const runtime = Object.entries(lock.packages as Record<string, any>).filter(
      ([path, entry]) => path !== '' && !entry.dev && !entry.optional && entry.engines?.node,
    );
    expect(runtime.length).toBeGreaterThan(0);
    const narrower = runtime
      .filter(([, entry]) => !semver.subset(pkg.engines.node, entry.engines.node))
      .map(([path, entry]) => `${path} needs node ${entry.engines.node}`);
    expect(narrower).toEqual([]);
  });

  // npm install builds the addon once, with CUDA where nvcc is found: it loads what is built, and
  // only when nothing loads runs cmake-js (which finds nvcc), never node-gyp's CPU-only rebuild.
  it('installs one build of the addon, with CUDA where nvcc exists', async () => {
    expect(pkg.scripts.install).toMatch(/cmake-js compile/);
    expect(pkg.scripts.install).not.toMatch(/node-gyp(?!-build)|rebuild/);
    let nvcc = false;
    try {
      execFileSync('nvcc', ['--version'], { stdio: 'ignore' });
      nvcc = true;
    } catch {
      // no CUDA toolkit here: the CPU-only build is the right one
    }
    const { deviceInfo } = await import('../lib/index.js');
    expect(deviceInfo().cuda.built).toBe(nvcc);
  });

  it('keeps type-only packages out of the runtime dependencies', () => {
    // lib/ai-sdk.ts uses @ai-sdk/provider for types alone; ai 7 brings it to those who use the provider.
    expect(pkg.dependencies['@ai-sdk/provider']).toBeUndefined();
    expect(pkg.peerDependenciesMeta['@ai-sdk/provider'].optional).toBe(true);
    expect(readFileSync('dist/ai-sdk.js', 'utf8')).not.toMatch(/from '@ai-sdk\/provider'/);
  });
});
