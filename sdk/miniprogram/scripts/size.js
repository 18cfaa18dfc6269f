'use strict';
// Size of the SDK as shipped: the src modules in require order, wrapped as a tiny CommonJS
// bundle, minified with terser and gzipped. Prints {"min_bytes", "gzip_bytes", "files"}.
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const { minify } = require('terser');

const src = path.join(__dirname, '..', 'src');

// Depth-first from index.js, so each module comes after the ones it requires.
function order(file, seen, out) {
  if (seen[file]) return out;
  seen[file] = true;
  const text = fs.readFileSync(file, 'utf8');
  const re = /require\('(\.\/[^']+)'\)/g;
  let m;
  while ((m = re.exec(text))) order(path.join(path.dirname(file), m[1].replace(/\.js$/, '') + '.js'), seen, out);
  out.push(file);
  return out;
}

async function main() {
  const files = order(path.join(src, 'index.js'), {}, []);
  const parts = files.map((f) => {
    const name = './' + path.relative(src, f).replace(/\\/g, '/').replace(/\.js$/, '');
    return JSON.stringify(name) + ': function (module, exports, require) {\n' + fs.readFileSync(f, 'utf8') + '\n}';
  });
  const bundle = '(function () {\nvar defs = {' + parts.join(',\n') + '};\nvar cache = {};\n' +
    'function req(n) { n = n.replace(/\\.js$/, ""); if (cache[n]) return cache[n].exports;\n' +
    '  var m = cache[n] = { exports: {} }; defs[n](m, m.exports, req); return m.exports; }\n' +
    'module.exports = req("./index");\n})();\n';
  const out = await minify(bundle, { ecma: 2015, compress: { passes: 2 }, mangle: true });
  const min = Buffer.from(out.code);
  const gz = zlib.gzipSync(min, { level: 9 });
  const result = { min_bytes: min.length, gzip_bytes: gz.length, files: files.length };
  const at = process.argv.indexOf('--out'); // --out FILE: keep the minified bundle (to inspect it)
  if (at > 0 && process.argv[at + 1]) fs.writeFileSync(process.argv[at + 1], min);
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
