package redisbus

import "github.com/redis/go-redis/v9"

// Every key of one channel carries the channel in a hash tag, so a script
// touches one slot and runs on Redis Cluster too:
//
//	<prefix>{<channel>}:meta  hash: epoch, top (the newest offset),
//	                          ht (no later than the oldest entry's t)
//	<prefix>{<channel>}:log   stream: one entry per event, ID "<offset>-0",
//	                          fields h (header), j (event JSON), t (ms)
//	<prefix>{<channel>}:live  pub/sub channel of new entries (a shard
//	                          channel on a Cluster: SPUBLISH/SSUBSCRIBE)
//	<prefix>{<channel>}:ids   sorted set: the key (source, id) of each
//	                          event history holds, scored by its offset
//
// The meta hash, the stream and the ids expire between history.ttl and
// 9/8 of it after the last append: a channel whose whole history has aged
// out is forgotten, and its next append starts a new epoch, so old cursors
// get a gap, never a silent skip. (An entry older than history.ttl leaves
// history on time whatever its keys' expiry: reads and appends trim it.)
//
// An append is idempotent while history holds the event: Kafka delivers at
// least once, and a record handed to the hub again (by the partition's next
// owner after a rebalance, or by a retry after a reply was lost) must not
// reach subscribers twice.

// trimLua drops entries older than the cutoff from the stream's head, and
// returns the ID of the oldest entry left and its time (nil when none). It
// looks at the head alone first: on a log that grows it is nearly always
// current, and each entry read is copied into the script (a command event
// is about half a kilobyte), so reading 16 at a time cost more than the
// rest of an append.
const trimLua = `
local function trim(log, cutoff)
  local n = 1
  while true do
    local head = redis.call('XRANGE', log, '-', '+', 'COUNT', n)
    if #head == 0 then return nil end
    for _, e in ipairs(head) do
      local t = 0
      for i = 1, #e[2], 2 do if e[2][i] == 't' then t = tonumber(e[2][i+1]) end end
      if t < cutoff then redis.call('XDEL', log, e[1]) else return e[1], t end
    end
    n = 16
  end
end
`

// appendLua defines append, which appends one event to one channel and
// announces it, in one step: an entry is announced only once history holds
// it, and never lost between the two. An event whose key history already
// holds is neither appended nor announced again.
//
// A log whose top is below what the publisher already saw in the same
// epoch lost writes (a failover to a replica that had not received them):
// it is moved to a new epoch before it grows again, so cursors past its top
// get a gap, never a silent skip.
//
// The keys' expiries are set to 9/8 of the TTL, and set again only once
// an eighth of the TTL has passed since (the meta hash's ex is when they
// were last set): so they always outlive the last append by the TTL, and
// a channel that gets events often pays three PEXPIREs once in a while,
// not at every append. An ex in the future (set by a node whose clock is
// ahead) has them set at once: nodes' clocks that disagree cost more
// expiries, and a channel's keys at most that disagreement, never an
// eighth of the TTL or more.
//
// The meta hash's ht is the time of the log's oldest entry, or earlier
// (an entry trimmed by MAXLEN or by a read leaves it behind): while it is
// within the TTL nothing at the head has expired, and the append reads no
// entry; an entry trimmed by MAXLEN takes its key out of ids by offset
// (the offsets of a log run on without holes). A log without ht (made by
// a read, or by an older version) is trimmed as before, which sets it.
//
// Its arguments: the channel's keys (meta, log, live, ids); the event's
// header, JSON and key; maxlen, ttl ms and now ms; a new epoch; the
// announcing command (PUBLISH, or SPUBLISH on a Cluster); the epoch and
// top the publisher saw last ("" and 0 for none); and for a channel of a
// shared namespace the node-level pub/sub channel to announce on instead
// of live and the text that starts its announcements (the channel and a
// space), "" and "" otherwise. It returns {epoch, offset, 1 if it moved
// the log to a new epoch else 0}.
const appendLua = trimLua + `
local function append(meta, log, live, ids, header, json, key, maxlen, ttl, now, newEpoch, pubCmd, seenEpoch, seenTop, target, lead)
  local m = redis.call('HMGET', meta, 'epoch', 'top', 'ht', 'ex')
  local epoch, ht, ex = m[1], tonumber(m[3]), tonumber(m[4])
  local slack = math.floor(tonumber(ttl) / 8)
  local expire = not ex or tonumber(now) < ex or tonumber(now) - ex >= slack
  local fenced = 0
  if not epoch then
    epoch = newEpoch
    ht = tonumber(now)
    expire = true
    redis.call('HSET', meta, 'epoch', epoch, 'top', 0, 'ht', ht, 'ex', now)
    redis.call('DEL', ids)
  elseif epoch == seenEpoch and tonumber(m[2]) < tonumber(seenTop) then
    epoch = newEpoch
    fenced = 1
    redis.call('HSET', meta, 'epoch', epoch)
  end
  local seen = redis.call('ZSCORE', ids, key)
  if seen then return {epoch, tonumber(seen), fenced} end
  local top = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', log, 'MAXLEN', maxlen, top .. '-0', 'h', header, 'j', json, 't', now)
  redis.call('ZADD', ids, top, key)
  local cutoff = tonumber(now) - tonumber(ttl)
  if ht and ht >= cutoff then
    local max = tonumber(maxlen)
    if top > max then
      redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. (top - max + 1))
    end
  else
    local first, t = trim(log, cutoff)
    if first then
      redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. string.match(first, '^(%d+)'))
      redis.call('HSET', meta, 'ht', t)
    else
      redis.call('HDEL', meta, 'ht')
    end
  end
  if expire then
    local life = tonumber(ttl) + slack
    redis.call('PEXPIRE', meta, life)
    redis.call('PEXPIRE', log, life)
    redis.call('PEXPIRE', ids, life)
    if m[1] then redis.call('HSET', meta, 'ex', now) end
  end
  if target == '' then target = live end
  redis.call(pubCmd, target, lead .. epoch .. ' ' .. top .. ' ' .. string.len(header) .. ' ' .. header .. json)
  return {epoch, top, fenced}
end
`

// publishScript appends one event to one channel (append).
//
// KEYS: meta, log, live, ids. ARGV: header, json, maxlen, ttl ms, now ms,
// new epoch, event key, the announcing command, the epoch and top the
// publisher saw last, the node-level channel and the announcements' lead.
// Returns {epoch, offset, fenced}.
var publishScript = redis.NewScript(appendLua + `
return append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[7], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12])
`)

// publishManyScript appends several events, each to its channels, in
// order, in one script (append each): one call for a consumer's batch
// instead of one per event and channel, which costs Redis less per append
// (BenchmarkBusPublishBatch). Its keys are in many slots, so it runs where
// one server holds every key (a single server, or Sentinel's master), not
// on a Cluster. An append Redis refuses does not stop the others, as with
// one script per append.
//
// KEYS: meta, log, live and ids of each channel, in order. ARGV: maxlen,
// ttl ms, now ms, the announcing command, then for each event its header,
// JSON, key and number of channels, each channel followed by its new
// epoch, the epoch and top the publisher saw last, the node-level channel
// and the announcements' lead. Returns, for each channel in order,
// {epoch, offset, fenced}, or {0, error} for one Redis refused.
var publishManyScript = redis.NewScript(appendLua + `
local maxlen, ttl, now, pubCmd = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out, a, k = {}, 5, 1
while a <= #ARGV do
  local header, json, key, n = ARGV[a], ARGV[a+1], ARGV[a+2], tonumber(ARGV[a+3])
  a = a + 4
  for _ = 1, n do
    local ok, r = pcall(append, KEYS[k], KEYS[k+1], KEYS[k+2], KEYS[k+3], header, json, key, maxlen, ttl, now, ARGV[a], pubCmd, ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4])
    if not ok then
      if type(r) == 'table' then r = r.err end
      r = {0, tostring(r)}
    end
    out[#out+1] = r
    k = k + 4
    a = a + 5
  end
end
return out
`)

// readScript reads a channel's top and the entries after a position, in one
// consistent step.
//
// KEYS: meta, log. ARGV: new epoch (if the channel has none), ttl ms, now
// ms, mode ("top", "oldest" or "after"), epoch and offset to read after.
// Returns {epoch, top, entries} or {epoch, top, "gap"}.
var readScript = redis.NewScript(trimLua + `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local first = trim(KEYS[2], tonumber(ARGV[3]) - tonumber(ARGV[2]))
local mode = ARGV[4]
if mode == 'top' then return {epoch, top, {}} end
if mode == 'oldest' then return {epoch, top, redis.call('XRANGE', KEYS[2], '-', '+')} end
local after = tonumber(ARGV[6])
if ARGV[5] ~= epoch or after > top then return {epoch, top, 'gap'} end
if after == top then return {epoch, top, {}} end
if not first then return {epoch, top, 'gap'} end
local firstOff = tonumber(string.match(first, '^(%d+)'))
if firstOff > after + 1 then return {epoch, top, 'gap'} end
return {epoch, top, redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')}
`)

// fenceScript moves a log that lost writes to a new epoch, unless that was
// done already.
//
// KEYS: meta. ARGV: the epoch that lost writes, the new epoch. Returns the
// log's epoch.
var fenceScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
return epoch
`)
