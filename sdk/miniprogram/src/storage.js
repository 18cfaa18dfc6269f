'use strict';
// Prefixed JSON values in wx storage. Values are stored as JSON strings so the SDK can measure
// exactly what it writes against WeChat's 1 MB-per-key limit. Storage errors (quota, a broken
// value) are logged and never thrown into the host app.

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // a surrogate half counts 2, so a pair (one 4-byte character) counts 4
    n += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
  }
  return n;
}

class Storage {
  constructor(wx, prefix, log) {
    this.wx = wx;
    this.prefix = prefix;
    this.log = log;
  }
  get(name) {
    try {
      const v = this.wx.getStorageSync(this.prefix + name);
      if (v === '' || v === null || v === undefined) return null;
      return typeof v === 'string' ? JSON.parse(v) : v;
    } catch (e) {
      this.log('storage read failed: ' + name, e);
      return null;
    }
  }
  set(name, value) {
    return this.setRaw(name, JSON.stringify(value));
  }
  setRaw(name, text) {
    try {
      this.wx.setStorageSync(this.prefix + name, text);
      return true;
    } catch (e) {
      this.log('storage write failed: ' + name, e);
      return false;
    }
  }
  remove(name) {
    try {
      this.wx.removeStorageSync(this.prefix + name);
    } catch (e) {
      this.log('storage remove failed: ' + name, e);
    }
  }
}

module.exports = { Storage, utf8Length };
