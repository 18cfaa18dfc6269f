'use strict';
// huiliu-miniprogram: const hl = require('huiliu-miniprogram').init({ baseUrl, appid })
const Client = require('./client');

let instance = null;

// The client for this app. A second call returns the same client (pages may call init() with
// no options to get it).
function init(options) {
  if (instance) return instance;
  instance = new Client(options);
  return instance;
}

module.exports = { init: init, Client: Client, version: '0.1.0' };
