'use strict';
// Runs a CommonJS bundle of the CLI (dist/bundle/img.cjs, scripts/bundle.mjs) with a V8 code
// cache made after a successful run of the same command.
//
// Why not Node's compile cache (module.enableCompileCache): it stores the code V8 made while
// compiling a module, which is its top level and little else. Every function a command runs is
// still compiled at every start. A cache made after the run (vm.Script#createCachedData) holds
// those too: a 1 MiB `vmforge-img convert` takes 46 ms instead of 63 (docs/img-convert.md).
//
// One cache file per bundle build, command, Node version and architecture, made by the first run
// of that command that exits 0 (a run that fails early would cache little). V8 refuses a cache
// made by another V8 version or with other flags (the run then compiles normally and writes a
// new one); it checks the source against the cache by length only, so the file name carries the
// bundle's SHA-256 (its first line, written by the build). The directory is private to the user:
// $NODE_COMPILE_CACHE/vmforge when Node's cache directory is set, else
// $TMPDIR/vmforge-code-cache-<uid>; a directory that is a symlink, not ours, or writable by
// others is not used. Files are written whole and renamed into place. NODE_DISABLE_COMPILE_CACHE=1
// turns the cache off, as it does Node's. NODE_DEBUG=vmforge:codecache or VMFORGE_DEBUG=1 say
// what happened, on stderr.

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const BUNDLE_ID = /^\/\/ vmforge-bundle ([0-9a-f]{64})\n/;

/** Debug output on stderr; a closed pipe there is not a crash (as for the commands' output). */
function debugLog(msg) {
  if (process.stderr.listenerCount('error') === 0) process.stderr.on('error', () => undefined);
  process.stderr.write(`vmforge:codecache ${msg}\n`);
}

function debugEnabled(env) {
  return (
    env.VMFORGE_DEBUG === '1' || /(^|,)\s*vmforge:(codecache|\*)\s*(,|$)/.test(env.NODE_DEBUG ?? '')
  );
}

/** The cache directory for this user, created if needed; undefined if it is not safe to use. */
function cacheDirectory(env) {
  const dir = env.NODE_COMPILE_CACHE
    ? path.join(env.NODE_COMPILE_CACHE, 'vmforge')
    : path.join(env.TMPDIR || '/tmp', `vmforge-code-cache-${process.getuid?.() ?? 'user'}`);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) return undefined;
    if (process.getuid && st.uid !== process.getuid()) return undefined;
    if ((st.mode & 0o022) !== 0) return undefined;
    return dir;
  } catch {
    return undefined;
  }
}

/**
 * The file's bytes if it is a regular file of ours that nobody else can write (opened without
 * following a symlink, checked on the open descriptor), else undefined. V8 does not verify a
 * cache's payload in release builds: a cache someone else could write would be their code.
 */
function readPrivateFile(file) {
  let fd;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (!st.isFile() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o022) !== 0)
      return undefined;
    return fs.readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

const DAY = 24 * 60 * 60 * 1000;

/**
 * Remove this bundle's caches of other builds not used for a week (another install may still
 * use a recent one: installs share the directory), and temporary files a killed run left.
 */
function removeStale(dir, prefix, current, log) {
  try {
    const now = Date.now();
    for (const f of fs.readdirSync(dir)) {
      if (!f.startsWith(prefix)) continue;
      const file = path.join(dir, f);
      const age = now - fs.lstatSync(file).mtimeMs;
      const stale = f.endsWith('.tmp') ? age > 60_000 : !f.startsWith(current) && age > 7 * DAY;
      if (stale) fs.rmSync(file, { force: true });
    }
  } catch (err) {
    log(`cleanup: ${err.message}`);
  }
}

/** What names a command's cache: the subcommand if argv starts with one, else "_". */
function commandKey(word) {
  return typeof word === 'string' && /^[a-z][a-z0-9-]{0,31}$/.test(word) ? word : '_';
}

/**
 * Load `bundleFile` (a CommonJS bundle whose first line is "// vmforge-bundle <sha256>") and
 * return its exports, with the code cache of `name` + `command`.
 */
function loadBundle(bundleFile, name, command, env = process.env) {
  const source = fs.readFileSync(bundleFile, 'utf8');
  const id = BUNDLE_ID.exec(source)?.[1];
  const log = debugEnabled(env) ? debugLog : () => undefined;
  const dir = id && env.NODE_DISABLE_COMPILE_CACHE !== '1' ? cacheDirectory(env) : undefined;
  const prefix = `${name}-`;
  const cacheFile =
    dir &&
    path.join(
      dir,
      `${prefix}${id.slice(0, 16)}-${commandKey(command)}-${process.version}-${process.arch}.v8`,
    );
  const cachedData = cacheFile ? readPrivateFile(cacheFile) : undefined;
  const script = new vm.Script(Module.wrap(source), {
    filename: bundleFile,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  if (!cacheFile)
    log(`not used (${id ? 'no private cache directory, or disabled' : 'no bundle id'})`);
  else if (!cachedData) log(`none yet: ${cacheFile}`);
  else log(`${script.cachedDataRejected ? 'rejected' : 'accepted'}: ${cacheFile}`);

  if (cacheFile && (!cachedData || script.cachedDataRejected)) {
    process.once('exit', (code) => {
      if (code !== 0) return;
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      try {
        fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
        fs.renameSync(tmp, cacheFile);
        log(`written: ${cacheFile}`);
        removeStale(dir, prefix, path.basename(cacheFile).slice(0, prefix.length + 16), log);
      } catch (err) {
        log(`not written: ${err.message}`);
        try {
          fs.rmSync(tmp, { force: true });
        } catch {
          // nothing more to do: the run itself succeeded
        }
      }
    });
  }

  const module = { exports: {} };
  script
    .runInThisContext()
    .call(
      module.exports,
      module.exports,
      Module.createRequire(bundleFile),
      module,
      bundleFile,
      path.dirname(bundleFile),
    );
  return module.exports;
}

module.exports = { loadBundle, cacheDirectory, commandKey };
