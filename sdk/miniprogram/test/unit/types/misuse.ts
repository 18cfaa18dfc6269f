// Must NOT compile: proves the check in types.test.js really checks.
import { init } from '../../../index';

const hl = init({ baseUrl: 'https://api.example.com', appid: 'wx1' });
hl.track('serch');
hl.coupons.claim('1');
init({ baseUrl: 'x' });
