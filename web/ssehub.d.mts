// Types for ssehub.js / ssehub.mjs.

/** Where a subscription stands. */
export type State =
  | 'connecting' // not yet open
  | 'open'
  | 'reconnecting' // was open; the connection dropped and is being made again
  | 'finished' // every topic sent `complete`
  | 'replaced' // a newer connection with the same client id took over
  | 'failed' // given up: see `error`
  | 'closed'; // close() was called

/** Why a connection failed. */
export interface SubscriptionError {
  /**
   * 'network': the hub cannot be reached (retrying); 'cors': the hub does not
   * allow this page's origin; 'auth': 401/403; 'refused': the hub is busy
   * (429/503, retrying after its Retry-After); 'replaced': a newer connection
   * with the same client id took over; 'invalid': another 4xx (a bad
   * selector, say); 'server': a 5xx (retrying).
   */
  reason: 'network' | 'cors' | 'auth' | 'refused' | 'replaced' | 'invalid' | 'server';
  /** The hub's words. */
  message: string;
  /** The HTTP status, 0 when there was none. */
  status: number;
  /** The hub's error code (docs/API.md), such as 'client_id_not_allowed'. */
  code: string;
  /** Whether the helper reconnects by itself. */
  retrying: boolean;
}

export interface ResetInfo {
  reason: 'history_trimmed' | 'unknown_last_event_id' | string;
  topics: string[];
}

export interface SubscribeOptions {
  /** The hub URL; default: this origin's /.well-known/mercure. */
  hub?: string;
  /** Topic selectors: exact topics, '*', or URI templates. */
  topics?: string[];
  /** Resume after this id; 'earliest' replays all history. */
  lastEventId?: string;
  /** A client id: a per-client channel; a newer connection replaces this one. */
  clientId?: string;
  /** Acknowledge shown events for clientId, so a reload continues after them. */
  ack?: boolean;
  /** Send cookies (the auth cookie) to a cross-origin hub. */
  withCredentials?: boolean;
  /** One handler per event type (use 'message' for events without a type). */
  on?: Record<string, (data: string, event: MessageEvent) => void>;
  onReset?: (info: ResetInfo) => void;
  onComplete?: (topic: string) => void;
  onError?: (error: SubscriptionError) => void;
  onStateChange?: (state: State) => void;
}

export interface Subscription {
  readonly state: State;
  /** The id of the last event delivered to a handler. */
  readonly lastEventId: string;
  /** The last error, until the connection opens again. */
  readonly error: SubscriptionError | null;
  /** Closes the connection for good (state 'closed'). */
  close(): void;
  /** Reconnects after 'replaced' or 'failed' (no-op otherwise), resuming after lastEventId. */
  takeBack(): void;
}

export function subscribe(options: SubscribeOptions): Subscription;

declare const SSEHub: { subscribe: typeof subscribe };
export default SSEHub;

declare global {
  /** Defined by ssehub.js loaded as a plain script. */
  const SSEHub: { subscribe: typeof subscribe };
}
