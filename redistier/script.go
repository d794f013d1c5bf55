package redistier

import "github.com/redis/go-redis/v9"

// applyScript is the one write path into the tier. It mirrors invalidation.AcceptFill (mode
// "fill") and invalidation.Decide (mode "event"); TestScriptMatchesGoRules checks that it does.
//
//	KEYS[1] the entry key
//	ARGV[1] version, 20 zero-padded digits
//	ARGV[2] mode: "fill" or "event"
//	ARGV[3] fill: kind to store, V (value) or N (not found); event: R (an UPSERT carrying its
//	        value) or E (anything else: evict)
//	ARGV[4] event policy: "held", "all" or "evict"
//	ARGV[5] value
//	ARGV[6] TTL in ms of a stored value (V or N)
//	ARGV[7] TTL in ms of a tombstone
//
// It returns 0 when nothing changed (stale fill, duplicate or older event), 1 when it wrote a
// tombstone, 2 when it stored a value.
var applyScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local known, cv, ckind = false, '', ''
if cur and string.len(cur) >= 21 then
  known, cv, ckind = true, string.sub(cur, 1, 20), string.sub(cur, 21, 21)
end
local v = ARGV[1]
if ARGV[2] == 'fill' then
  if known and v < cv then return 0 end
  redis.call('SET', KEYS[1], v .. ARGV[3] .. ARGV[5], 'PX', ARGV[6])
  return 2
end
if known and v <= cv then return 0 end
if ARGV[3] == 'R' and (ARGV[4] == 'all' or (ARGV[4] == 'held' and known and ckind ~= 'T')) then
  redis.call('SET', KEYS[1], v .. 'V' .. ARGV[5], 'PX', ARGV[6])
  return 2
end
redis.call('SET', KEYS[1], v .. 'T', 'PX', ARGV[7])
return 1
`)
