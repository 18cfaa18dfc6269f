// The whole integration: init once, before any Page() is registered (app.js runs first).
const huiliu = require('huiliu-miniprogram');

const hl = huiliu.init({
  baseUrl: 'http://127.0.0.1:8000', // your Huiliu server; in production an https "request 合法域名"
  appid: 'wxd3m0campus0001', // this mini-program's AppID (the demo tenant of `app.py seed-demo`)
  debug: true, // log every request to the console while developing
});

App({ hl: hl }); // pages and components reach the client as getApp().hl
