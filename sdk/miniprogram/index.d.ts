/// <reference types="miniprogram-api-typings" />
// Type declarations for huiliu-miniprogram (the JavaScript in src/ needs no build step).

declare namespace Huiliu {
  /** Which events are tracked automatically. Every switch defaults to true. */
  interface AutoTrackOptions {
    /** `app_open {scene, path}` at launch (from wx.getLaunchOptionsSync) and on every wx.onAppShow after a hide. */
    appOpen?: boolean;
    /** `session_end {duration_s}` on wx.onAppHide (then the queue is written and flushed). */
    sessionEnd?: boolean;
    /** `page_view {page, query}` from the wrapped global `Page` (hook on onShow). */
    pageView?: boolean;
    /** `share {page}` from the page's own onShareAppMessage (never added where a page has none). */
    share?: boolean;
    /** `message_open {touch_id, page}` when the launch, show or page query carries `touch_id` (once per touch id). */
    messageOpen?: boolean;
  }

  interface InitOptions {
    /** The Huiliu server, e.g. `https://api.example.com` (no trailing slash needed). Required. */
    baseUrl: string;
    /** The mini-program's appid (sent as `X-Huiliu-Appid` at login). Required. */
    appid: string;
    /** Send as soon as this many events wait. Default 20. */
    batchSize?: number;
    /** Otherwise send queued events after this many ms. Default 5000. */
    flushInterval?: number;
    /** Events per request. Default 100; capped at 500 (the API's limit). */
    maxBatch?: number;
    /** Events kept in the queue; the oldest are dropped (and counted in `stats().dropped`). Default 1000. */
    maxQueue?: number;
    /** Bytes (JSON, UTF-8) of the stored queue; the oldest are dropped beyond it. Default 524288 (512 KiB); capped at 1,000,000 to stay under WeChat's 1 MB per storage key. */
    maxQueueBytes?: number;
    /** Requests of the SDK open at once, all kinds together. Default 2 (WeChat allows 10 per app). */
    maxInFlight?: number;
    /** wx.request timeout in ms. Default 5000. */
    timeout?: number;
    /** Backoff base in ms: retry n waits random(0, min(retryMax, retryBase * 2^n)). Default 1000. */
    retryBase?: number;
    /** Backoff ceiling in ms (also caps a server's Retry-After). Default 300000 (5 min). */
    retryMax?: number;
    /** Storage writes of the queue are debounced by this many ms (written at once on hide and flush). Default 300. */
    persistDelay?: number;
    /** Automatic events; `false` turns all of them off. Default: all on. */
    autoTrack?: boolean | AutoTrackOptions;
    /** Let `track` send `order_paid` / `order_refunded`. Default false: orders should come from the merchant's server. */
    allowOrderEvents?: boolean;
    /** Log what the SDK does with console.log. Default false (refused events and dropped batches are always logged with console.warn). */
    debug?: boolean;
    /** Prefix of every storage key of the SDK. Default `'huiliu:'`. */
    storagePrefix?: string;
    /** The `wx` object to use; defaults to the global `wx` (pass a shim to run outside WeChat). */
    wx?: Partial<WechatMiniprogram.Wx>;
  }

  /** Event types the server knows; anything else must be `custom:<name>`. */
  type EventType =
    | 'app_open' | 'page_view' | 'session_end' | 'search' | 'add_to_cart' | 'cart_abandoned'
    | 'checkout_start' | 'order_paid' | 'payment_failed' | 'order_refunded' | 'share' | 'invite'
    | 'review' | 'like' | 'comment' | 'message_open' | 'coupon_view'
    | `custom:${string}`;

  /** What `flush()` did with the events queued when it was called. */
  interface FlushSummary {
    /** Accepted by the server (or already stored: duplicates). */
    sent: number;
    /** Refused by the server (dropped, with the reason logged). */
    rejected: number;
    /** Still queued: the send failed and will be retried with backoff. */
    pending: number;
  }

  interface Stats {
    /** Events in the queue now (including those being sent). */
    queued: number;
    /** Requests of the SDK open now. */
    inFlight: number;
    /** Events the server accepted. */
    sent: number;
    /** Events the server already had (a resend after a lost answer). */
    duplicates: number;
    /** Events the server refused. */
    rejected: number;
    /** Events dropped because the queue was full (kept in storage). */
    dropped: number;
    /** Failed attempts that were retried. */
    retries: number;
  }

  /** A rejected promise of the SDK gives an Error with these fields. */
  interface HuiliuError extends Error {
    /** HTTP status; 0 when no answer came. */
    status: number;
    /** The API's error code (e.g. `per_user_limit`), `network`, `opted_out`, `invalid_request`, `subscribe_failed`, ... */
    code: string;
    /** Whether trying again may help. */
    retryable: boolean;
    /** claim / requestSubscribe: not answered yet; the call is kept and retried with the same id. */
    pending?: boolean;
  }

  interface Coupon {
    id: number;
    template_id: number;
    name: string;
    amount_off_fen: number;
    min_spend_fen: number;
    merchant: string | null;
    status: 'issued' | 'redeemed' | 'expired';
    issued_at: string;
    expires_at: string;
    redeemed_at: string | null;
    order_id: string | null;
  }

  /** A re-engagement card; `id` is the touch id. */
  interface Card {
    id: number;
    title: string | null;
    text: string;
    page: string | null;
    coupon_id: number | null;
  }

  type SubscribeAnswer = 'accept' | 'reject' | 'ban' | 'filter';

  interface SubscribeResult {
    /** Messages this user may now be sent, per template id. */
    allowances: Record<string, number>;
    /** True when the server had this answer already (a retry). */
    duplicate: boolean;
  }

  interface Coupons {
    /** `GET /mp/v1/coupons`: this user's coupons, soonest to expire first. */
    list(): Promise<Coupon[]>;
    /** `POST /mp/v1/coupons/claim` with an idempotency id kept in storage until answered: a coupon is issued once however often it is retried (also after a restart). A second claim of a template still waiting for its answer is the same claim. */
    claim(templateId: number): Promise<Coupon>;
    /** `POST /mp/v1/coupons/{id}/redeem`; retried with the same order. */
    redeem(couponId: number, order: { orderId: string; amountFen: number }): Promise<Coupon>;
  }

  interface Client {
    /** Queue an event; returns its id, or null when refused (opted out, unknown type, props over 2 KB, an order event without `allowOrderEvents`, a `message_open` for a touch already seen). */
    track(type: EventType, props?: Record<string, unknown>): string | null;
    /** Send every event queued now. Never rejects. */
    flush(): Promise<FlushSummary>;
    /** wx.login and `POST /mp/v1/login`; resolves with the token (reuses a valid one). Also lets events refused by two 401s go again. */
    login(): Promise<string>;
    /** Show WeChat's subscribe prompt (call it from a tap handler) for 1 to 3 templates and post the answers to `/mp/v1/subscriptions` with an idempotency id. */
    requestSubscribe(templateIds: string | string[]): Promise<SubscribeResult>;
    /** `GET /mp/v1/reengagement`: the cards for this user (fetching marks them seen). */
    reengagement(): Promise<Card[]>;
    /** Stop tracking: clears the queue, keeps the choice in storage and tells the server (`POST /mp/v1/me/opt-out`, retried on the next show until it is heard). Afterwards nothing else is sent; marketing calls reject with code `opted_out`. */
    optOut(): Promise<{ marketing_opt_out: boolean }>;
    /** Whether the user opted out (the choice kept on the phone): for a settings switch. */
    isOptedOut(): boolean;
    /** Resume tracking and tell the server (`POST /mp/v1/me/opt-in`). */
    optIn(): Promise<{ marketing_opt_out: boolean }>;
    /** `GET /mp/v1/me/data`: everything the server holds about this user. */
    myData(): Promise<Record<string, unknown>>;
    /** `DELETE /mp/v1/me`, then the queue, the outbox and every storage key of the SDK are removed. Afterwards the SDK starts afresh (the next event logs in again, as a new user) unless the user had opted out: that choice alone is kept (only on the phone; nothing more is sent). */
    eraseMe(): Promise<{ erased: Record<string, number> | null }>;
    /** Counters; `dropped` survives restarts. */
    stats(): Stats;
    readonly coupons: Coupons;
  }
}

/** Create the client (once per app: later calls return the same client, and may omit the options). */
export declare function init(options?: Huiliu.InitOptions): Huiliu.Client;
export declare const version: string;
export type InitOptions = Huiliu.InitOptions;
export type Client = Huiliu.Client;
export type AutoTrackOptions = Huiliu.AutoTrackOptions;
export type EventType = Huiliu.EventType;
export type FlushSummary = Huiliu.FlushSummary;
export type Stats = Huiliu.Stats;
export type HuiliuError = Huiliu.HuiliuError;
export type Coupon = Huiliu.Coupon;
export type Card = Huiliu.Card;
export type SubscribeAnswer = Huiliu.SubscribeAnswer;
export type SubscribeResult = Huiliu.SubscribeResult;
