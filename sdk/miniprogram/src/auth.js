'use strict';
// Login: wx.login -> POST /mp/v1/login {code} -> {token, expires_in}. The token and its expiry
// are kept in storage; a token within RENEW_MS of expiry is renewed before use. One login runs
// at a time, however many requests want a token.
const t = require('./transport');

const RENEW_MS = 300 * 1000;

function failure(msg) {
  const e = new Error('huiliu: ' + msg);
  e.status = 0;
  e.code = 'login_failed';
  e.retryable = true;
  return e;
}

class Auth {
  constructor(client) {
    this.c = client;
    const s = client.store.get('token');
    this.tok = s && typeof s.token === 'string' && typeof s.exp === 'number' ? s : null;
    this.pending = null;
  }
  token() {
    return this.tok ? this.tok.token : null;
  }
  // A usable token, logging in first when there is none or it is about to expire. If renewal
  // fails while the old token has not expired yet, the old one is still used.
  ensure() {
    const tok = this.tok;
    if (tok && tok.exp - Date.now() > RENEW_MS) return Promise.resolve(tok.token);
    return this.renew().catch((e) => {
      if (this.tok && this.tok.exp > Date.now()) return this.tok.token;
      throw e;
    });
  }
  // A new token. `stale` is the token a 401 refused: if another request already replaced it,
  // that newer token is used instead of logging in again.
  renew(stale) {
    if (stale && this.tok && this.tok.token !== stale && !this.pending) return Promise.resolve(this.tok.token);
    if (!this.pending) {
      const p = this._login();
      const done = () => {
        if (this.pending === p) this.pending = null;
      };
      p.then(done, done);
      this.pending = p;
    }
    return this.pending;
  }
  _login() {
    const c = this.c;
    const epoch = c._epoch;
    return new Promise((resolve, reject) => {
      try {
        c.wx.login({
          success: (r) => (r && r.code ? resolve(r.code) : reject(failure('wx.login gave no code'))),
          fail: (e) => reject(failure('wx.login: ' + ((e && e.errMsg) || 'fail')))
        });
      } catch (e) {
        reject(failure('wx.login: ' + e));
      }
    })
      .then((code) => c.transport.request({
        method: 'POST',
        path: '/mp/v1/login',
        data: { code: code },
        // Outside WeChat there is no Referer naming the app, so say which tenant this is.
        header: { 'X-Huiliu-Appid': c.o.appid }
      }))
      .then((res) => {
        const d = res.data;
        if (t.classify(res.status) !== 'ok' || !d || typeof d.token !== 'string') {
          const e = t.toError(res);
          if (res.status === 401) e.retryable = true;
          throw e;
        }
        const tok = { token: d.token, exp: Date.now() + (d.expires_in > 0 ? d.expires_in : 7200) * 1000 };
        if (epoch === c._epoch) {
          this.tok = tok;
          c.store.set('token', tok);
        }
        return tok.token;
      });
  }
  clear() {
    this.tok = null;
    this.pending = null;
  }
}

module.exports = Auth;
