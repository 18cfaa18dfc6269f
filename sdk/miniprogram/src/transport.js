'use strict';
// wx.request behind a gate: at most maxInFlight requests of the SDK are open at once (WeChat
// allows 10 for the whole app and the host app needs its share). Answers are normalised to
// {status, data, header}; a failed request (no answer, timeout) has status 0. Nothing here
// rejects, so callers decide what is retried.

function headerValue(header, name) {
  const want = name.toLowerCase();
  for (const k in header || {}) if (k.toLowerCase() === want) return header[k];
  return undefined;
}

// ok | auth (401: renew the token once) | retry (no answer, 408, 429, 5xx) | fatal (other 4xx)
function classify(status) {
  if (status >= 200 && status < 300) return 'ok';
  if (status === 401) return 'auth';
  if (status === 0 || status === 408 || status === 429 || status >= 500) return 'retry';
  return 'fatal';
}

// An Error carrying what the caller needs: status (0 = no answer), the API's error code,
// whether trying again may help, and the server's Retry-After in seconds if it sent one.
function toError(res) {
  const body = res.data && typeof res.data === 'object' ? res.data.error : null;
  const code = body && body.code ? body.code : res.status ? 'http_' + res.status : 'network';
  const e = new Error('huiliu: ' + (res.status ? 'HTTP ' + res.status + ' ' : '') + code +
    (body && body.message ? ': ' + body.message : res.errMsg ? ': ' + res.errMsg : ''));
  e.status = res.status;
  e.code = code;
  e.retryable = classify(res.status) !== 'fatal';
  e.data = res.data;
  const ra = parseFloat(headerValue(res.header, 'Retry-After'));
  if (ra > 0) e.retryAfter = ra;
  return e;
}

// Full jitter: random(0, min(max, base * 2^attempt)); a Retry-After on 429/503 wins when longer
// (still capped at max).
function retryDelay(attempt, base, max, err) {
  let d = Math.floor(Math.random() * Math.min(max, base * Math.pow(2, attempt)));
  if (err && (err.status === 429 || err.status === 503) && err.retryAfter) {
    d = Math.max(d, Math.min(max, err.retryAfter * 1000));
  }
  return d;
}

class Transport {
  constructor(wx, baseUrl, timeout, maxInFlight) {
    this.wx = wx;
    this.baseUrl = baseUrl;
    this.timeout = timeout;
    this.max = maxInFlight;
    this.active = 0;
    this.waiting = [];
  }
  // r: {method, path, data, header, skip}. data and header may be functions, called when the
  // request really leaves (so sent_at and the token are fresh after waiting for a slot); skip()
  // is asked at that moment too, and a skipped request resolves {status: -1, skipped: true}.
  request(r) {
    return new Promise((resolve) => {
      this.waiting.push({ r: r, resolve: resolve });
      this._next();
    });
  }
  _next() {
    while (this.active < this.max && this.waiting.length) {
      const job = this.waiting.shift();
      if (job.r.skip && job.r.skip()) {
        job.resolve({ status: -1, skipped: true });
        continue;
      }
      this.active++;
      this._send(job.r, (res) => {
        this.active--;
        job.resolve(res);
        // After the caller has seen this answer, so a failure can stop the requests waiting.
        Promise.resolve().then(() => this._next());
      });
    }
  }
  _send(r, done) {
    let over = false;
    let guard = null;
    const end = (res) => {
      if (over) return;
      over = true;
      clearTimeout(guard);
      done(res);
    };
    // If wx never calls back, free the slot anyway.
    guard = setTimeout(() => end({ status: 0, errMsg: 'request:fail no callback' }), this.timeout + 2000);
    try {
      const header = typeof r.header === 'function' ? r.header() : r.header;
      this.wx.request({
        url: this.baseUrl + r.path,
        method: r.method,
        data: typeof r.data === 'function' ? r.data() : r.data,
        header: header || {},
        timeout: this.timeout,
        dataType: 'json',
        success: (res) => end({ status: res.statusCode, data: res.data, header: res.header || {} }),
        fail: (err) => end({ status: 0, errMsg: (err && err.errMsg) || 'request:fail' })
      });
    } catch (e) {
      end({ status: 0, errMsg: String((e && e.message) || e) });
    }
  }
}

module.exports = { Transport, classify, toError, retryDelay, headerValue };
