// Compiled by types.test.js with `tsc --noEmit`: how an app uses the SDK must type-check.
import { init, Coupon, FlushSummary } from '../../../index';

const hl = init({
  baseUrl: 'https://api.example.com',
  appid: 'wx0123456789abcdef',
  batchSize: 10,
  autoTrack: { share: false },
  debug: true,
});
const id: string | null = hl.track('search', { query: '奶茶' });
hl.track('custom:tap_banner');
hl.flush().then((s: FlushSummary) => s.sent + s.pending + s.rejected);
hl.coupons.claim(1).then((c: Coupon) => c.amount_off_fen);
hl.coupons.redeem(2, { orderId: 'A1', amountFen: 2000 });
hl.requestSubscribe(['tmpl-1']).then((r) => r.allowances['tmpl-1']);
hl.reengagement().then((cards) => cards.map((c) => c.id));
const dropped: number = hl.stats().dropped;
init().optOut();
wx.getStorageSync('x');
void id;
void dropped;
