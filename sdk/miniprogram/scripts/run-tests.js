'use strict';
// Runs `node --test` on every test/**/*.test.js (found here, so files added later are run).
// Exits non-zero when no test file exists or when any test fails.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const testDir = path.join(root, 'test');

function find(dir, out) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    return out;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name === 'node_modules') continue;
    const full = path.join(dir, e.name);
    if (e.isDirectory()) find(full, out);
    else if (e.isFile() && e.name.endsWith('.test.js')) out.push(full);
  }
  return out;
}

const files = find(testDir, []);
if (files.length === 0) {
  console.error('run-tests: no test/**/*.test.js found');
  process.exit(1);
}
console.log('run-tests: ' + files.length + ' file(s)\n  ' +
  files.map((f) => path.relative(root, f)).join('\n  '));
const args = ['--test'].concat(process.argv.slice(2), files);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.error) {
  console.error(r.error);
  process.exit(1);
}
process.exit(r.status === null ? 1 : r.status);
