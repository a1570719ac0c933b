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
// The meta hash, the stream and the ids expire history.ttl after the last
// append: a channel whose whole history has aged out is forgotten, and its
// next append starts a new epoch, so old cursors get a gap, never a silent
// skip.
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

// publishScript appends one event to one channel and announces it, in one
// step: an entry is announced only once history holds it, and never lost
// between the two. An event whose key history already holds is neither
// appended nor announced again.
//
// A log whose top is below what the publisher already saw in the same
// epoch lost writes (a failover to a replica that had not received them):
// it is moved to a new epoch before it grows again, so cursors past its top
// get a gap, never a silent skip.
//
// The meta hash's ht is the time of the log's oldest entry, or earlier
// (an entry trimmed by MAXLEN or by a read leaves it behind): while it is
// within the TTL nothing at the head has expired, and the append reads no
// entry; an entry trimmed by MAXLEN takes its key out of ids by offset
// (the offsets of a log run on without holes). A log without ht (made by
// a read, or by an older version) is trimmed as before, which sets it.
//
// KEYS: meta, log, live, ids. ARGV: header, json, maxlen, ttl ms, now ms,
// new epoch, event key, the announcing command (PUBLISH, or SPUBLISH on a
// Cluster), the epoch and top the publisher saw last ("" and 0 for none),
// and for a channel of a shared namespace the node-level pub/sub channel
// to announce on instead of live and the text that starts its
// announcements (the channel and a space); "" and "" otherwise.
// Returns {epoch, offset, 1 if it moved the log to a new epoch else 0}.
var publishScript = redis.NewScript(trimLua + `
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'ht')
local epoch, ht = m[1], tonumber(m[3])
local fenced = 0
if not epoch then
  epoch = ARGV[6]
  ht = tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'ht', ht)
  redis.call('DEL', KEYS[4])
elseif epoch == ARGV[9] and tonumber(m[2]) < tonumber(ARGV[10]) then
  epoch = ARGV[6]
  fenced = 1
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seen = redis.call('ZSCORE', KEYS[4], ARGV[7])
if seen then return {epoch, tonumber(seen), fenced} end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], top .. '-0', 'h', ARGV[1], 'j', ARGV[2], 't', ARGV[5])
redis.call('ZADD', KEYS[4], top, ARGV[7])
local cutoff = tonumber(ARGV[5]) - tonumber(ARGV[4])
if ht and ht >= cutoff then
  local maxlen = tonumber(ARGV[3])
  if top > maxlen then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (top - maxlen + 1))
  end
else
  local first, t = trim(KEYS[2], cutoff)
  if first then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.match(first, '^(%d+)'))
    redis.call('HSET', KEYS[1], 'ht', t)
  else
    redis.call('HDEL', KEYS[1], 'ht')
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
local target = KEYS[3]
if ARGV[11] ~= '' then target = ARGV[11] end
redis.call(ARGV[8], target, ARGV[12] .. epoch .. ' ' .. top .. ' ' .. string.len(ARGV[1]) .. ' ' .. ARGV[1] .. ARGV[2])
return {epoch, top, fenced}
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
