'use strict';
// Guards on the source itself: ES2015 syntax only, wx touched only through the allowed
// functions, the typings compile (and catch misuse), init returns one client.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const acorn = require('acorn');

const root = path.join(__dirname, '..', '..');
const srcDir = path.join(root, 'src');

function srcFiles(dir) {
  let out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out = out.concat(srcFiles(full));
    else if (e.name.endsWith('.js')) out.push(full);
  }
  return out;
}

const ALLOWED_WX = ['request', 'login', 'getStorageSync', 'setStorageSync', 'removeStorageSync',
  'onAppShow', 'onAppHide', 'requestSubscribeMessage', 'getLaunchOptionsSync'];

test('every src file parses as ES2015 (the mini-program runtime needs no build step)', () => {
  const files = srcFiles(srcDir);
  assert.ok(files.length >= 8, 'expected the src modules, found ' + files.length);
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    assert.doesNotThrow(() => acorn.parse(text, { ecmaVersion: 2015, sourceType: 'script' }),
      path.relative(root, f) + ' is not ES2015');
  }
});

test('the ES2015 guard refuses later syntax', () => {
  for (const code of ['async function f() {}', 'a?.b', 'a ?? b', 'x = {...y}', 'class A { x = 1 }', '2 ** 3']) {
    assert.throws(() => acorn.parse(code, { ecmaVersion: 2015 }), code);
  }
});

test('src touches wx only through the allowed functions', () => {
  const used = new Set();
  for (const f of srcFiles(srcDir)) {
    const text = fs.readFileSync(f, 'utf8').replace(/\/\/.*$/gm, '');
    assert.ok(!/\bwx\s*\[/.test(text), path.basename(f) + ' indexes wx with []');
    const re = /\bwx\s*\.\s*([A-Za-z_$][\w$]*)/g;
    let m;
    while ((m = re.exec(text))) used.add(m[1]);
  }
  const bad = Array.from(used).filter((n) => ALLOWED_WX.indexOf(n) < 0);
  assert.deepStrictEqual(bad, [], 'wx members outside the allowed list: ' + bad.join(', '));
  assert.ok(used.has('request') && used.has('setStorageSync'), 'the scan found the wx calls');
  for (const f of srcFiles(srcDir)) {
    const text = fs.readFileSync(f, 'utf8');
    for (const g of ['getApp(', 'getCurrentPages(', 'App(', 'Component(', 'wx.getSystemInfo']) {
      assert.ok(text.indexOf(g) < 0, path.basename(f) + ' uses ' + g);
    }
  }
});

function tsc(file) {
  const bin = path.join(root, 'node_modules', '.bin', 'tsc');
  return spawnSync(bin, ['--noEmit', '--strict', '--target', 'es2015', '--lib', 'es2020', '--module', 'nodenext',
    '--types', 'miniprogram-api-typings', path.join(__dirname, 'types', file)], { cwd: root, encoding: 'utf8' });
}

test('index.d.ts: a usage file type-checks with tsc --noEmit, a misuse file does not', () => {
  const ok = tsc('usage.ts');
  assert.strictEqual(ok.status, 0, ok.stdout + ok.stderr);
  const bad = tsc('misuse.ts');
  assert.notStrictEqual(bad.status, 0, 'misuse.ts compiled');
  assert.match(bad.stdout, /serch/);
  assert.match(bad.stdout, /appid/);
});

test('index.d.ts documents every option with its default', () => {
  const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');
  assert.match(dts, /reference types="miniprogram-api-typings"/);
  for (const k of ['batchSize', 'flushInterval', 'maxBatch', 'maxQueue', 'maxQueueBytes', 'maxInFlight', 'timeout',
    'retryBase', 'retryMax', 'persistDelay', 'autoTrack', 'allowOrderEvents', 'debug', 'storagePrefix']) {
    assert.match(dts, new RegExp('\\n\\s*/\\*\\*[^\\n]*Default[^\\n]*\\*/\\n\\s*' + k + '\\?:'), k + ' lacks a documented default');
  }
});

test('init returns the same client every time', () => {
  const { createWx } = require('../shim/wx');
  const env = createWx();
  const huiliu = require('../../src/index');
  const warn = console.warn;
  console.warn = () => {};
  try {
    const a = huiliu.init({ baseUrl: 'https://x.test', appid: 'wx1', wx: env.wx, autoTrack: false, flushInterval: 3600000 });
    const b = huiliu.init({ baseUrl: 'https://other.test', appid: 'wx2', wx: env.wx });
    assert.strictEqual(a, b);
    assert.strictEqual(huiliu.init(), a);
    a._close();
  } finally {
    console.warn = warn;
  }
  assert.throws(() => new huiliu.Client({ appid: 'wx1', wx: env.wx }), /baseUrl and appid/);
});

test('package.json points WeChat and Node at src', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.strictEqual(pkg.main, 'src/index.js');
  assert.strictEqual(pkg.miniprogram, 'src');
  assert.strictEqual(pkg.types, 'index.d.ts');
  for (const v of Object.values(pkg.devDependencies)) assert.match(v, /^\d+\.\d+\.\d+$/, 'devDependencies are exact pins');
});
