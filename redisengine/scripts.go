package redisengine

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"

	"github.com/redis/rueidis"
)

// script is a Lua script that Redis runs atomically: nothing else runs
// between its commands, so what it writes is written all or not at all.
type script struct {
	src string
	sha string
}

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{src: src, sha: hex.EncodeToString(sum[:])}
}

// errNoConn is why a command fails before the engine's first connection
// (Connect with RetryOnFailedConnect): nothing was sent.
var errNoConn = errors.New("no connection yet")

// runScript runs s with the engine's client, within ctx and at most
// Options.Timeout; before the first connection it fails with errNoConn.
func (e *Engine) runScript(ctx context.Context, s script, keys, args []string) rueidis.RedisResult {
	c := e.conn()
	if c == nil {
		return rueidis.NewErrorResult(errNoConn)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return s.exec(ctx, c, keys, args)
}

// exec runs s by its hash, sending the script itself if Redis does not
// have it (after a restart). s must be idempotent: it is sent once more
// when the connection turned out broken (an error other than a failed
// dial), as rueidis reports a connection that broke while idle on the
// first command sent after.
func (s script) exec(ctx context.Context, c rueidis.Client, keys, args []string) rueidis.RedisResult {
	r := s.run(ctx, c, keys, args)
	if err := r.Error(); err != nil && brokenConn(err) && ctx.Err() == nil {
		r = s.run(ctx, c, keys, args)
	}
	return r
}

func (s script) run(ctx context.Context, c rueidis.Client, keys, args []string) rueidis.RedisResult {
	r := c.Do(ctx, s.command(c, keys, args, false))
	if err, ok := rueidis.IsRedisErr(r.Error()); ok && err.IsNoScript() {
		r = c.Do(ctx, s.command(c, keys, args, true))
	}
	return r
}

// command returns the command that runs s, by its hash or, with full,
// the script itself.
func (s script) command(c rueidis.Client, keys, args []string, full bool) rueidis.Completed {
	if full {
		return c.B().Eval().Script(s.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	}
	return c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

// The scripts share these lines: now is the server's time in
// milliseconds, so that the hubs' clocks never matter; start begins a
// room's history under a new epoch when its meta is missing (never
// written, expired, flushed, evicted, or lost in a restart without
// persistence), dropping what is left of an older stream.
const (
	nowLua   = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	startLua = `
local function start(epoch)
	redis.call('DEL', KEYS[2])
	redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
	return epoch
end
`
)

// appendScript appends a message to a room's history, in one step:
// KEYS meta (a hash: e the epoch, s the last seq), log (the stream) and
// the message's id key; ARGV id, message, Messages, MaxAge in ms, an
// epoch for a new history, the publish command, the room's announce
// channel, and how long to keep the id key in ms. The message's seq is
// the meta's next one, and its stream ID "<seq>-0", so that a room's
// seqs have no gaps and the stream is read by seq. The stream is cut to
// the policy's Messages, both keys expire MaxAge after the last append,
// and the channel gets "<epoch> <seq>". The id key holds the seq for a
// while, so that an append sent again (its answer was lost) is stored
// once: it then returns the first one's seq. Returns {seq, epoch}.
var appendScript = newScript(nowLua + startLua + `
local e = redis.call('HGET', KEYS[1], 'e') or start(ARGV[5])
local prev = redis.call('GET', KEYS[3])
if prev then return {tonumber(prev), e} end
local s = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('SET', KEYS[3], s, 'PX', ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], s .. '-0', 'i', ARGV[1], 't', now, 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[6], ARGV[7], e .. ' ' .. s)
return {s, e}
`)

// readScript reads a room's history: KEYS meta and log; ARGV after (a
// seq), limit, MaxAge in ms, an epoch to start a history with when there
// is none (or "" to start none), and the mode: "f" for the next limit
// messages after after, oldest first (a follow), "r" for the newest
// limit of them (all if limit is negative), newest first. Messages older
// than MaxAge are left out. Returns {epoch, last seq, the stream ID of
// the last message scanned in mode "f" (0 if none), then stream ID, id
// and message of each}; an empty epoch when the room
// has no history and none was started.
var readScript = newScript(nowLua + startLua + `
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
	if ARGV[4] == '' then return {'', 0, 0} end
	e = start(ARGV[4])
	redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local s = redis.call('HGET', KEYS[1], 's')
local from = '(' .. ARGV[1] .. '-0'
local limit = tonumber(ARGV[2])
local r = {}
if limit == 0 then
elseif ARGV[5] == 'f' then
	r = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', limit)
elseif limit < 0 then
	r = redis.call('XRANGE', KEYS[2], from, '+')
else
	r = redis.call('XREVRANGE', KEYS[2], '+', from, 'COUNT', limit)
end
local oldest = now - tonumber(ARGV[3])
local out = {e, s, 0}
for _, m in ipairs(r) do
	if ARGV[5] == 'f' then out[3] = m[1] end
	local f = m[2]
	if tonumber(f[4]) >= oldest then
		out[#out + 1] = m[1]
		out[#out + 1] = f[2]
		out[#out + 1] = f[6]
	end
end
return out
`)

// restartScript starts a room's history anew, under a new epoch, if it
// went back: KEYS meta and log; ARGV the epoch and the seq a hub had
// passed, the new epoch, MaxAge in ms. Redis came back with older data
// (a snapshot, an append-only file fsynced a second ago, a replica that
// lagged): its seqs after the one it kept would be given again to other
// messages, so the history must not go on under that epoch.
var restartScript = newScript(startLua + `
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] and tonumber(redis.call('HGET', KEYS[1], 's')) < tonumber(ARGV[2]) then
	start(ARGV[3])
	redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
`)

// presenceScript writes or withdraws this hub's entry of a room's
// presence: KEYS pres (a hash: hub ID to its members) and presx (a
// sorted set: hub ID scored by when its entry expires); ARGV hub ID,
// members ("" to withdraw, "=" to refresh the expiry only), TTL in ms,
// the publish command and the room's presence channel. A write or a
// withdrawal is announced with the hub ID; a refresh is not, unless the
// entry was gone (Redis lost it), and then it returns 0 so that the hub
// writes it again.
var presenceScript = newScript(nowLua + `
local ttl = tonumber(ARGV[3])
if ARGV[2] == '' then
	redis.call('HDEL', KEYS[1], ARGV[1])
	redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[2] == '=' then
	if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
	redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
	redis.call('PEXPIRE', KEYS[1], 2 * ttl)
	redis.call('PEXPIRE', KEYS[2], 2 * ttl)
	return 1
else
	redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
	redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
	redis.call('PEXPIRE', KEYS[1], 2 * ttl)
	redis.call('PEXPIRE', KEYS[2], 2 * ttl)
end
redis.call(ARGV[4], ARGV[5], ARGV[1])
return 1
`)

// presenceReadScript returns the live entries of a room's presence,
// {hub ID, members, …}, and drops the expired ones: KEYS pres and presx.
var presenceReadScript = newScript(nowLua + `
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
	redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
	redis.call('HDEL', KEYS[1], unpack(dead))
end
local out = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
	local v = redis.call('HGET', KEYS[1], h)
	if v then
		out[#out + 1] = h
		out[#out + 1] = v
	end
end
return out
`)
