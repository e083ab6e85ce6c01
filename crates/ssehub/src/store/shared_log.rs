//! The shared log of a cluster, in Redis: every node appends to it and
//! reads it, so that every node sees the same events in the same order.
//!
//! The log assigns the seq (one counter, incremented in the same script
//! that appends the event), so ids are the same on every node and increase
//! across all topics without any node's clock. What Redis holds per event
//! is the event itself, once: fan-out stays on each node.
//!
//! Keys (all under one hash tag, `{PREFIX}`, so that the scripts may touch
//! them together on a Redis Cluster too, where they live on one shard):
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `log` | stream | the events, entry id `SEQ-0`, field `e`: the event as JSON |
//! | `seq` | string | the highest seq assigned (at least Redis's clock in µs at each append) |
//! | `pos` | string | the count of events appended: a position with no holes (field `p`) |
//! | `epoch` | string | a name for this log's life: a Redis that lost its data has none, or another |
//! | `ids` | hash | publisher id → seq, for ids unique across the cluster |
//! | `finished` | set | topics closed by a final event |
//! | `trimmed` | hash | topic → highest seq trimmed from its history |
//! | `meta` | hash | `forgotten_up_to`; `lost_up_to` (a loss, or where the log began) |
//! | `acks` | hash | client id → acknowledged position (JSON) |
//! | `doomed` | sorted set | seqs out of every history, by when: deleted from `log` after [`GRACE_MS`] |
//! | `ctl` | stream | control records (claims of a client id, acks, announcements), capped |
//! | `nodes` | sorted set | node → when it last said it is alive (ms), for `presence:NODE` |
//! | `presence:NODE` | hash | with `--subscriptions`: a node's open streams' subscriptions (JSON) |
//!
//! An event that leaves history is deleted from the log only a grace period
//! later, so a node that reads the log a little behind never finds a hole
//! where an event was: a hole means it fell further behind than that, and
//! it loads its state again (see `hub::cluster`).

use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::{Ack, Batch, Recovered, Store, StoreError};
use crate::event::StoredEvent;

/// How long an event out of every history stays readable in the log.
pub const GRACE_MS: u64 = 60_000;

/// Control records kept in `ctl` (approximately, a few MB): they matter
/// only to nodes reading now, which are at most a read or two behind.
const CONTROL_RECORDS: usize = 10_000;

/// A node that has not said it is alive for this long is gone: its
/// subscriptions are no longer listed (and are deleted).
const NODE_ALIVE_MS: u64 = 15_000;

/// Entries read from the log in one call.
const READ_COUNT: usize = 1024;

/// How long one read waits for new entries before it checks the log's
/// health again.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// The Lua function every script that may find the log new starts with: a
/// log with no epoch is new (or lost its data). It gets one, an empty
/// stream, and a counter that starts at the microseconds of Redis's clock:
/// past every id an earlier life of the log gave, even when every node
/// restarted with it and nobody remembers them (an earlier life would have
/// had to give more than one id per microsecond on average). Only where
/// ids start comes from a clock, and only Redis's; their order is the
/// counter's. Seqs stay below 2^53, exact in Lua's numbers, and are written
/// with `%d` (Lua would write 1.7e+15).
macro_rules! open_log {
    () => {
        r"
local function make_stream(log_key)
  pcall(redis.call, 'XGROUP', 'CREATE', log_key, 'ssehub-open', '$', 'MKSTREAM')
  pcall(redis.call, 'XGROUP', 'DESTROY', log_key, 'ssehub-open')
end
local function lost_up_to(meta_key, seq)
  if tonumber(redis.call('HGET', meta_key, 'lost_up_to') or '0') < seq then
    redis.call('HSET', meta_key, 'lost_up_to', string.format('%d', seq))
  end
end
local function open(seq_key, epoch_key, log_key, meta_key, new_epoch)
  local epoch = redis.call('GET', epoch_key)
  if epoch then return epoch end
  redis.call('SET', epoch_key, new_epoch)
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if tonumber(redis.call('GET', seq_key) or '0') < floor then
    redis.call('SET', seq_key, string.format('%d', floor))
  end
  -- A position from before the log began is from an earlier life of it.
  lost_up_to(meta_key, floor - 1)
  make_stream(log_key)
  return new_epoch
end
"
    };
}

/// Opens the log (see [`open_log`]); its epoch.
const OPEN: &str = concat!(
    open_log!(),
    "return open(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])"
);

/// Appends an event: refused if the log is not the one this node knows
/// (another epoch, or a counter behind what the node has seen: Redis lost
/// data), if its publisher id is taken, or if one of its topics is finished.
/// Its seq is the counter's next, or Redis's clock in microseconds if that
/// is later: ids then stay past those of a Redis rolled back to an older
/// copy of itself, with every node restarted (nobody to remember them). Its
/// position (`p`, a second counter with no holes) lets a node see that it
/// missed an event.
const APPEND: &str = r"
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return {'lost'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'lost'} end
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[2]) then return {'lost'} end
if tonumber(redis.call('HGET', KEYS[7], 'lost_up_to') or '0') > tonumber(ARGV[6]) then
  return {'lost'}
end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return {'duplicate'} end
for i = 7, #ARGV do
  if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 1 then return {'finished', ARGV[i]} end
end
local t = redis.call('TIME')
local next = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if next < now then next = now end
local seq = string.format('%d', next)
redis.call('SET', KEYS[1], seq)
local position = string.format('%d', redis.call('INCR', KEYS[6]))
redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[5], 'p', position)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[3], seq) end
if ARGV[4] == '1' then
  for i = 7, #ARGV do redis.call('SADD', KEYS[4], ARGV[i]) end
end
return {'ok', seq}
";

/// Writes what a node's retention decided (every node decides the same, so
/// each step may be written more than once): deletions (the id freed at
/// once, the event deleted after the grace period), trims (the highest
/// wins), forgotten topics, positions.
/// ARGV: grace, forgotten_up_to, #delete, seqs..., #trimmed, (topic, seq)...,
/// #forgotten, topics..., #acks, (client, json)..., #forgotten acks, clients...
const COMMIT: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  local seq = ARGV[i]; i = i + 1
  local entry = redis.call('XRANGE', KEYS[1], seq .. '-0', seq .. '-0')
  if #entry > 0 then
    local ok, event = pcall(cjson.decode, entry[1][2][2])
    if ok and type(event) == 'table' and event.id and redis.call('HGET', KEYS[2], event.id) == seq then
      redis.call('HDEL', KEYS[2], event.id)
    end
    redis.call('ZADD', KEYS[7], 'NX', string.format('%d', now_ms), seq)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  local topic, seq = ARGV[i], ARGV[i + 1]; i = i + 2
  if tonumber(redis.call('HGET', KEYS[4], topic) or '0') < tonumber(seq) then
    redis.call('HSET', KEYS[4], topic, seq)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  redis.call('HDEL', KEYS[4], ARGV[i]); redis.call('SREM', KEYS[3], ARGV[i]); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]); i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  redis.call('HDEL', KEYS[6], ARGV[i]); i = i + 1
end
if tonumber(redis.call('HGET', KEYS[5], 'forgotten_up_to') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[5], 'forgotten_up_to', ARGV[2])
end
local due = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf',
  string.format('%d', now_ms - tonumber(ARGV[1])), 'LIMIT', 0, 1000)
for _, seq in ipairs(due) do redis.call('XDEL', KEYS[1], seq .. '-0') end
if #due > 0 then redis.call('ZREM', KEYS[7], unpack(due)) end
return #due
";

/// After Redis lost data: the log gets a new epoch (unless another node
/// already gave it one), and its counter jumps past every seq a node has
/// seen, so no id is ever given twice; what was lost counts as forgotten.
/// ARGV: new epoch, highest seq this node has seen.
const ADOPT: &str = concat!(
    open_log!(),
    r"
local epoch = open(KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 0 then make_stream(KEYS[4]) end
local known = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') < known then
  redis.call('SET', KEYS[1], string.format('%d', known + tonumber(ARGV[3])))
end
if tonumber(redis.call('HGET', KEYS[3], 'forgotten_up_to') or '0') < known then
  redis.call('HSET', KEYS[3], 'forgotten_up_to', ARGV[2])
end
-- Whatever a node saw up to here may be gone, on every topic.
lost_up_to(KEYS[3], known)
return {epoch, redis.call('GET', KEYS[1])}
"
);

/// How far the counter jumps after a loss: past any seq a node that read
/// the log a little behind the others could still have seen.
const RESEED_GAP: u64 = 1 << 20;

/// Where [`RedisLog::present`] sends: a stream's subscriber and its
/// documents, or `None` for its end.
type PresenceWriter = Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, Option<String>)>>>;

/// The key names, under one hash tag.
#[derive(Debug, Clone)]
struct Keys {
    log: String,
    seq: String,
    epoch: String,
    ids: String,
    finished: String,
    trimmed: String,
    meta: String,
    acks: String,
    doomed: String,
    ctl: String,
    nodes: String,
    position: String,
    prefix: String,
}

impl Keys {
    /// A node's subscriptions.
    fn presence(&self, node: &str) -> String {
        format!("{{{}}}:presence:{node}", self.prefix)
    }

    fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            log: key("log"),
            seq: key("seq"),
            epoch: key("epoch"),
            ids: key("ids"),
            finished: key("finished"),
            trimmed: key("trimmed"),
            meta: key("meta"),
            acks: key("acks"),
            doomed: key("doomed"),
            ctl: key("ctl"),
            nodes: key("nodes"),
            position: key("pos"),
            prefix: prefix.to_owned(),
        }
    }
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The publisher id is used by an event in history.
    DuplicateId,
    /// The topic is finished.
    TopicFinished(String),
    /// The log is not the one this node knows: Redis lost data.
    Lost,
    /// Appended as `seq`, but fewer replicas than asked confirmed it in
    /// time: a failover may lose it.
    NotReplicated {
        /// Its seq.
        seq: u64,
        /// Replicas that confirmed it.
        confirmed: u32,
    },
    /// Redis cannot be reached, or refused the call: nothing was appended.
    Unavailable(String),
    /// The call was sent and no answer came (a timeout, a connection lost
    /// meanwhile): the event may be appended, or not.
    Unknown(String),
}

/// A record of the control stream: what nodes tell each other that is not
/// an event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// A connection of `client` opened on the node that wrote this (its
    /// local subscriber `sub`): older connections of that client id end.
    Claim {
        /// The client id.
        client: String,
        /// The writer's own number for the connection.
        sub: u64,
    },
    /// A client acknowledged a position.
    Ack {
        /// The client id.
        client: String,
        /// The position.
        ack: Ack,
    },
    /// A hub event that is not stored (Mercure's subscription events).
    Announce {
        /// Its topic.
        topic: String,
        /// Its type.
        event_type: String,
        /// Its data.
        data: String,
    },
    /// The backend asked to end a client's connection.
    Disconnect {
        /// The client id.
        client: String,
    },
}

/// What one read of the log brought.
#[derive(Debug, Default)]
pub struct Read {
    /// New events, in seq order (their `id` is empty when the hub named it).
    pub events: Vec<StoredEvent>,
    /// New control records, with the node that wrote each.
    pub controls: Vec<(String, Control)>,
    /// Where the next read of the control stream starts.
    pub control_position: String,
    /// Events this node never read are missing before the next (deleted
    /// while it was far behind): it must load the log again.
    pub hole: bool,
}

/// The log's state, as a node checks it after a (re)connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The log this node knows, whole.
    Whole,
    /// Another epoch, or none, or a counter behind what the node has seen.
    Lost,
}

/// How the hub names the ids it gives, from their seq: the log holds no
/// name for them (the seq is only known inside the append script), so
/// every event read back is named again, alike on every node.
pub type IdNames = Box<dyn Fn(u64) -> String + Send + Sync>;

/// The shared log in Redis, and this node's connections to it.
pub struct RedisLog {
    client: redis::Client,
    names: IdNames,
    keys: Keys,
    timeout: Duration,
    /// Names this node in the control records it writes.
    node: String,
    /// The address, without a password, for messages.
    shown: String,
    /// The epoch this node knows.
    epoch: Mutex<String>,
    /// Replicas that must confirm an append (WAIT).
    replicas: u32,
    /// The position (`p`) of the last event read, to see a hole.
    position: Mutex<u64>,
    /// The log's `lost_up_to` when this node last loaded it: a higher one
    /// means another node found a loss (and repaired the counter) first.
    lost_seen: Mutex<u64>,
    /// For the store's blocking calls (startup, replays, retention).
    blocking: Mutex<Option<redis::Connection>>,
    /// To the writer of this node's subscriptions (`--subscriptions`).
    presence: PresenceWriter,
    /// For appends and control records, shared by all publishers.
    shared: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("redis", &self.shown)
            .field("node", &self.node)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl RedisLog {
    /// A log at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`) under
    /// `prefix`; every call to Redis gives up after `timeout`. Nothing is
    /// connected yet: [`Store::load`] connects first.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        names: IdNames,
    ) -> Result<RedisLog, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Config(format!(
                "--redis-url: {e}. Give a URL like redis://127.0.0.1:6379/0"
            ))
        })?;
        let shown = {
            let info = client.get_connection_info();
            format!("{}", info.addr())
        };
        Ok(RedisLog {
            client,
            names,
            keys: Keys::new(prefix),
            timeout,
            node: uuid::Uuid::new_v4().simple().to_string(),
            shown,
            epoch: Mutex::new(String::new()),
            replicas: 0,
            position: Mutex::new(0),
            lost_seen: Mutex::new(0),
            blocking: Mutex::new(None),
            presence: Mutex::new(None),
            shared: tokio::sync::Mutex::new(None),
        })
    }

    /// Makes every append wait until `replicas` Redis replicas have it.
    pub fn waiting_for(mut self, replicas: u32) -> RedisLog {
        self.replicas = replicas;
        self
    }

    /// Replicas that must confirm an append.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Where Redis is, for messages.
    pub fn address(&self) -> &str {
        &self.shown
    }

    /// This node's name in control records.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn config(&self, response: Duration) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response))
    }

    /// The connection publishers share, connected if it is not.
    async fn shared(&self) -> Result<MultiplexedConnection, String> {
        let mut shared = self.shared.lock().await;
        if let Some(conn) = &*shared {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config(self.timeout))
            .await
            .map_err(unavailable)?;
        *shared = Some(conn.clone());
        Ok(conn)
    }

    /// After a failed call, or once Redis is back after an outage: the
    /// next call connects again (a connection from before is broken).
    pub async fn forget_shared(&self) {
        *self.shared.lock().await = None;
    }

    fn lost_seen(&self) -> u64 {
        *self
            .lost_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn epoch(&self) -> String {
        self.epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Appends `event` (its `seq` is ignored; its `id` empty when the hub
    /// names it), after the highest seq this node has seen, `known`.
    /// Returns its seq once Redis has it.
    pub async fn append(&self, event: &StoredEvent, known: u64) -> Result<u64, AppendError> {
        let json =
            serde_json::to_string(event).map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let script = redis::Script::new(APPEND);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.seq)
            .key(&self.keys.log)
            .key(&self.keys.ids)
            .key(&self.keys.finished)
            .key(&self.keys.epoch)
            .key(&self.keys.position)
            .key(&self.keys.meta)
            .arg(self.epoch())
            .arg(known)
            .arg(&event.id)
            .arg(if event.is_final { "1" } else { "0" })
            .arg(json)
            .arg(self.lost_seen());
        for topic in &event.topics {
            invocation.arg(topic);
        }
        let mut conn = self.shared().await.map_err(AppendError::Unavailable)?;
        let answer: Vec<String> = match invocation.invoke_async(&mut conn).await {
            Ok(answer) => answer,
            Err(e) => {
                self.forget_shared().await;
                if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() {
                    return Err(AppendError::Unknown(e.to_string()));
                }
                return Err(AppendError::Unavailable(e.to_string()));
            }
        };
        match answer.first().map(String::as_str) {
            Some("ok") => {
                let seq = answer
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| AppendError::Unavailable("Redis gave no seq".into()))?;
                self.replicated(&mut conn, seq).await?;
                Ok(seq)
            }
            Some("duplicate") => Err(AppendError::DuplicateId),
            Some("finished") => Err(AppendError::TopicFinished(
                answer.get(1).cloned().unwrap_or_default(),
            )),
            Some("lost") => Err(AppendError::Lost),
            _ => Err(AppendError::Unavailable(format!(
                "unexpected answer from Redis: {answer:?}"
            ))),
        }
    }

    /// With replicas to wait for: whether they confirmed everything this
    /// connection wrote so far, `seq` included, within half the timeout.
    async fn replicated(
        &self,
        conn: &mut MultiplexedConnection,
        seq: u64,
    ) -> Result<(), AppendError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let wait = (self.timeout / 2).as_millis().max(1) as u64;
        let confirmed: redis::RedisResult<u32> = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(wait)
            .query_async(conn)
            .await;
        let confirmed = confirmed.unwrap_or_else(|err| {
            tracing::warn!(%err, seq, "WAIT for replicas failed");
            0
        });
        if confirmed < self.replicas {
            return Err(AppendError::NotReplicated { seq, confirmed });
        }
        Ok(())
    }

    /// Writes a control record for every node.
    pub async fn tell(&self, control: &Control) -> Result<(), String> {
        let json = serde_json::to_string(control).map_err(unavailable)?;
        let mut conn = self.shared().await?;
        let written: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&self.keys.ctl)
            .arg("MAXLEN")
            .arg("~")
            .arg(CONTROL_RECORDS)
            .arg("*")
            .arg("n")
            .arg(&self.node)
            .arg("c")
            .arg(json)
            .query_async(&mut conn)
            .await;
        if let Err(e) = written {
            self.forget_shared().await;
            return Err(e.to_string());
        }
        Ok(())
    }

    /// This node is alive (with `--subscriptions`, its subscriptions are
    /// listed by every node); called by its follower every few seconds.
    pub async fn alive(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let now = crate::event::millis(std::time::SystemTime::now());
        let _: () = conn
            .zadd(&self.keys.nodes, &self.node, now)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Records (`Some`) or removes (`None`) the subscriptions of one of this
    /// node's streams, in the background, in the order asked (a stream's
    /// removal never overtakes its record).
    pub fn present(&self, subscriber: String, documents: Option<String>) {
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(presence) = &*presence {
            let _ = presence.send((subscriber, documents));
        }
    }

    /// Starts the writer of [`RedisLog::present`]; it ends with the log.
    pub fn start_presence(self: &std::sync::Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<String>)>();
        *self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        let log = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((subscriber, documents)) = rx.recv().await {
                let Some(log) = log.upgrade() else { return };
                let Ok(mut conn) = log.shared().await else {
                    continue;
                };
                let key = log.keys.presence(&log.node);
                let written: redis::RedisResult<()> = match documents {
                    Some(json) => conn.hset(&key, &subscriber, json).await,
                    None => conn.hdel(&key, &subscriber).await,
                };
                if let Err(err) = written {
                    tracing::debug!(%err, "a subscription could not be recorded in Redis");
                }
            }
        });
    }

    /// The subscriptions of the other live nodes' streams, each stream's
    /// as the JSON it was recorded as; at most `most` streams. The records
    /// of nodes gone quiet are deleted.
    pub async fn others_present(&self, most: usize) -> Result<Vec<String>, String> {
        let mut conn = self.shared().await?;
        let now = crate::event::millis(std::time::SystemTime::now());
        let nodes: Vec<(String, u64)> = conn
            .zrange_withscores(&self.keys.nodes, 0, -1)
            .await
            .map_err(unavailable)?;
        let mut found = Vec::new();
        for (node, seen) in nodes {
            if node == self.node {
                continue;
            }
            let key = self.keys.presence(&node);
            if now.saturating_sub(seen) > NODE_ALIVE_MS {
                let _: redis::RedisResult<()> = redis::pipe()
                    .del(&key)
                    .zrem(&self.keys.nodes, &node)
                    .query_async(&mut conn)
                    .await;
                continue;
            }
            let mut cursor = 0u64;
            loop {
                let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                for (_, json) in page {
                    if found.len() >= most {
                        return Ok(found);
                    }
                    found.push(json);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// A connection of its own for [`RedisLog::read`], whose reads block.
    pub async fn reader(&self) -> Result<MultiplexedConnection, String> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config(READ_BLOCK + self.timeout))
            .await
            .map_err(unavailable)
    }

    /// Whether the log is still the one this node knows, which has seen up
    /// to `known`; and where the control stream ends now.
    pub async fn check(
        &self,
        conn: &mut MultiplexedConnection,
        known: u64,
    ) -> Result<(Health, String), String> {
        let (epoch, seq, log, lost): (Option<String>, Option<u64>, bool, Option<u64>) =
            redis::pipe()
                .get(&self.keys.epoch)
                .get(&self.keys.seq)
                .exists(&self.keys.log)
                .hget(&self.keys.meta, "lost_up_to")
                .query_async(conn)
                .await
                .map_err(unavailable)?;
        // (A loss another node found first shows only in `lost_up_to`: it
        // has already moved the counter past what this node saw.)
        let whole = epoch.as_deref() == Some(self.epoch().as_str())
            && seq.unwrap_or(0) >= known
            && log
            && lost.unwrap_or(0) <= self.lost_seen();
        let last: Entries = conn
            .xrevrange_count(&self.keys.ctl, "+", "-", 1)
            .await
            .map_err(unavailable)?;
        let position = last
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.0.clone());
        Ok((if whole { Health::Whole } else { Health::Lost }, position))
    }

    /// After a loss: a new epoch (or the one another node gave), a counter
    /// past `known`, and everything up to `known` forgotten. Returns the
    /// counter.
    pub async fn adopt(&self, conn: &mut MultiplexedConnection, known: u64) -> Result<u64, String> {
        let (epoch, seq): (String, u64) = redis::Script::new(ADOPT)
            .key(&self.keys.seq)
            .key(&self.keys.epoch)
            .key(&self.keys.meta)
            .key(&self.keys.log)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(known)
            .arg(RESEED_GAP)
            .invoke_async(conn)
            .await
            .map_err(unavailable)?;
        *self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = epoch;
        Ok(seq)
    }

    /// Waits (at most a second) for events after `after` and control
    /// records after `control`.
    pub async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        after: u64,
        control: &str,
    ) -> Result<Read, String> {
        let options = StreamReadOptions::default()
            .block(READ_BLOCK.as_millis() as usize)
            .count(READ_COUNT);
        let after = format!("{after}-0");
        let reply: Option<StreamReadReply> = conn
            .xread_options(
                &[&self.keys.log, &self.keys.ctl],
                &[after.as_str(), control],
                &options,
            )
            .await
            .map_err(unavailable)?;
        let mut read = Read {
            control_position: control.to_owned(),
            ..Read::default()
        };
        let mut position = self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                if stream.key == self.keys.log {
                    if read.hole {
                        continue;
                    }
                    let seq = entry_seq(&entry.id);
                    let at: Option<u64> = entry.get("p");
                    if let Some(at) = at {
                        if at > *position + 1 {
                            read.hole = true;
                            continue;
                        }
                        *position = at;
                    }
                    let json: Option<String> = entry.get("e");
                    match json.and_then(|json| self.decode(seq, &json)) {
                        Some(event) => read.events.push(event),
                        None => {
                            tracing::warn!(seq, "an unreadable event in the shared log is skipped")
                        }
                    }
                } else {
                    read.control_position = entry.id.clone();
                    let node: Option<String> = entry.get("n");
                    let json: Option<String> = entry.get("c");
                    if let (Some(node), Some(Ok(control))) =
                        (node, json.as_deref().map(serde_json::from_str::<Control>))
                    {
                        read.controls.push((node, control));
                    }
                }
            }
        }
        Ok(read)
    }

    /// The blocking connection, connected if it is not; `f` runs on it, and
    /// a failure drops it so the next call connects again.
    fn blocking<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut slot = self
            .blocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .map_err(unavailable)?;
            conn.set_read_timeout(Some(self.timeout))
                .map_err(unavailable)?;
            conn.set_write_timeout(Some(self.timeout))
                .map_err(unavailable)?;
            *slot = Some(conn);
        }
        let result = f(slot.as_mut().expect("connected"));
        if result.is_err() {
            *slot = None;
        }
        result.map_err(unavailable)
    }

    fn unreachable(&self, reason: String) -> StoreError {
        StoreError::Unreachable(format!(
            "Redis at {}: {reason}. Check that Redis runs and --redis-url points at it",
            self.shown
        ))
    }
}

/// Log entries as XRANGE gives them: id, then field and value pairs.
type Entries = Vec<(String, Vec<(String, String)>)>;

/// The seq of a log entry id, `SEQ-0`.
fn entry_seq(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store for RedisLog {
    /// What the log holds now; the epoch is created if the log has none
    /// (a new cluster), and remembered.
    fn load(&self, each: &mut dyn FnMut(StoredEvent)) -> Result<Recovered, StoreError> {
        let keys = self.keys.clone();
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        type Head = (
            String,
            Option<u64>,
            Option<u64>,
            bool,
            Vec<(String, u64)>,
            Option<u64>,
            Option<u64>,
            Vec<(String, String)>,
            Vec<u64>,
        );
        let (epoch, last_seq, position, whole, trimmed, forgotten, lost, acks, doomed): Head = self
            .blocking(|conn| {
                let _: String = redis::Script::new(OPEN)
                    .key(&keys.seq)
                    .key(&keys.epoch)
                    .key(&keys.log)
                    .key(&keys.meta)
                    .arg(&fresh)
                    .invoke(conn)?;
                // The counter first: every event up to it is in the log
                // when the log is read after it.
                redis::pipe()
                    .get(&keys.epoch)
                    .get(&keys.seq)
                    .get(&keys.position)
                    .exists(&keys.log)
                    .hgetall(&keys.trimmed)
                    .hget(&keys.meta, "forgotten_up_to")
                    .hget(&keys.meta, "lost_up_to")
                    .hgetall(&keys.acks)
                    .zrange(&keys.doomed, 0, -1)
                    .query(conn)
            })
            .map_err(|e| self.unreachable(e))?;
        *self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = epoch;
        let doomed: std::collections::HashSet<u64> = doomed.into_iter().collect();
        let last_seq = last_seq.unwrap_or(0);
        let mut recovered = Recovered {
            last_seq,
            trimmed: trimmed.into_iter().collect(),
            forgotten_up_to: forgotten.unwrap_or(0),
            lost_up_to: lost.unwrap_or(0),
            ..Recovered::default()
        };
        let mut position = position.unwrap_or(0);
        if !whole {
            // The log itself was deleted, the rest of the keys not: every
            // event up to the counter may be gone (never a silent gap).
            tracing::warn!(
                last_seq,
                "the shared log's stream is missing: its events count as lost"
            );
            recovered.forgotten_up_to = recovered.forgotten_up_to.max(last_seq);
        }
        for (client, json) in acks {
            if let Ok(ack) = serde_json::from_str(&json) {
                recovered.acks.push((client, ack));
            }
        }
        let mut from = "-".to_owned();
        loop {
            let page: Entries = self
                .blocking(|conn| {
                    redis::cmd("XRANGE")
                        .arg(&keys.log)
                        .arg(&from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(READ_COUNT)
                        .query(conn)
                })
                .map_err(|e| self.unreachable(e))?;
            let Some(last) = page.last() else { break };
            from = format!("({}", last.0);
            for (id, fields) in page {
                let seq = entry_seq(&id);
                recovered.last_seq = recovered.last_seq.max(seq);
                if let Some((_, at)) = fields.iter().find(|(name, _)| name == "p") {
                    position = position.max(at.parse().unwrap_or(0));
                }
                if doomed.contains(&seq) {
                    continue;
                }
                match self.decode_fields(seq, &fields) {
                    Some(event) => {
                        each(event);
                        recovered.events += 1;
                    }
                    None => tracing::warn!(seq, "an unreadable event in the shared log is skipped"),
                }
            }
        }
        *self
            .lost_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = recovered.lost_up_to;
        // The tail goes on after what was loaded.
        *self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = position;
        Ok(recovered)
    }

    fn read(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, StoreError> {
        let mut pipe = redis::pipe();
        for seq in seqs {
            let id = format!("{seq}-0");
            pipe.cmd("XRANGE").arg(&self.keys.log).arg(&id).arg(&id);
        }
        let pages: Vec<Entries> = self
            .blocking(|conn| pipe.query(conn))
            .map_err(|e| StoreError::Unreachable(format!("Redis at {}: {e}", self.shown)))?;
        Ok(seqs
            .iter()
            .zip(pages)
            .map(|(&seq, page)| {
                page.first()
                    .and_then(|(_, fields)| self.decode_fields(seq, fields))
            })
            .collect())
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        // Events are appended by `append`, one script each; a batch holds
        // what retention decided.
        debug_assert!(batch.append.is_empty());
        let script = redis::Script::new(COMMIT);
        let mut invocation = script.prepare_invoke();
        let k = &self.keys;
        for key in [
            &k.log,
            &k.ids,
            &k.finished,
            &k.trimmed,
            &k.meta,
            &k.acks,
            &k.doomed,
        ] {
            invocation.key(key);
        }
        invocation.arg(GRACE_MS).arg(batch.forgotten_up_to);
        invocation.arg(batch.delete.len());
        for seq in &batch.delete {
            invocation.arg(seq);
        }
        invocation.arg(batch.trimmed.len());
        for (topic, seq) in &batch.trimmed {
            invocation.arg(topic).arg(seq);
        }
        invocation.arg(batch.forgotten_topics.len());
        for topic in &batch.forgotten_topics {
            invocation.arg(topic);
        }
        invocation.arg(batch.acks.len());
        for (client, ack) in &batch.acks {
            let json = serde_json::to_string(ack).map_err(|e| StoreError::Write(e.to_string()))?;
            invocation.arg(client).arg(json);
        }
        invocation.arg(batch.forgotten_acks.len());
        for client in &batch.forgotten_acks {
            invocation.arg(client);
        }
        let _deleted: u64 = self
            .blocking(|conn| invocation.invoke(conn))
            .map_err(|e| StoreError::Write(format!("Redis at {}: {e}", self.shown)))?;
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }
}

impl RedisLog {
    /// An event from its log entry's JSON, with its seq and id.
    fn decode(&self, seq: u64, json: &str) -> Option<StoredEvent> {
        let mut event: StoredEvent = serde_json::from_str(json).ok()?;
        event.seq = seq;
        if event.id.is_empty() {
            event.id = (self.names)(seq);
        }
        Some(event)
    }

    /// An event from its log entry's fields.
    fn decode_fields(&self, seq: u64, fields: &[(String, String)]) -> Option<StoredEvent> {
        let (_, json) = fields.iter().find(|(name, _)| name == "e")?;
        self.decode(seq, json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("hub-a");
        for key in [&keys.log, &keys.seq, &keys.ctl, &keys.doomed] {
            assert!(key.starts_with("{hub-a}:"), "{key}");
        }
    }

    #[test]
    fn a_log_entry_id_names_its_seq() {
        assert_eq!(entry_seq("42-0"), 42);
        assert_eq!(entry_seq("junk"), 0);
    }

    #[test]
    fn control_records_read_back() {
        let claim = Control::Claim {
            client: "c1".into(),
            sub: 7,
        };
        let json = serde_json::to_string(&claim).unwrap();
        assert_eq!(json, r#"{"kind":"claim","client":"c1","sub":7}"#);
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), claim);
    }
}
