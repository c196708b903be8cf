-- One announce, in one round trip, on one swarm (every key in one hash slot).
--
-- KEYS: 1 meta (hash: field "s" = nine big-endian u32: the peer counts of
--         the four peer hashes, the keys' expiry time, when each peer hash's
--         next trim step is due; "c1".."c4" = where those steps resume),
--       2 IPv4 seeders, 3 IPv4 leechers, 4 IPv6 seeders, 5 IPv6 leechers
--         (hashes: field = the peer's IP bytes; value = one 27-byte record per
--         peer at that IP: port(2) last-seen(4, big-endian unix seconds)
--         flags(1: "c" counted as completed, "-" not) peer id(20)),
--       6 the snatch count (a string; it never expires).
-- ARGV: 1 "a" announce or "s" stopped, 2 "4"/"6", 3 IP bytes, 4 port (2 bytes),
--       5 peer id, 6 "1" seeder, 7 "1" event=completed, 8 numwant,
--       9 peer TTL (seconds), 10 most peers (0: no cap), 11 now (Unix
--       seconds, the node's clock).
-- Returns {status (0 ok, 1 swarm full, 2 too many peers at this IP), complete,
--          incomplete, downloaded, now (Unix seconds), the four peer counts
--          (IPv4 seeders, leechers, IPv6 seeders, leechers)}. The peers to
--          send are drawn by the HRANDFIELD commands the node pipelines
--          after it.
--
-- The rules are the in-memory store's: a peer is the same peer when it comes
-- from the same IP with the same port or the same peer id; seeders get
-- leechers only; the announcer is never in its own list; own family first;
-- a completion counts once per peer. Expired peers are trimmed a bounded
-- step at a time by the announces that touch the swarm, never by a sweep.

local REC = 27
local MAX_PER_IP = 128
local now = tonumber(ARGV[11])
local ttl = tonumber(ARGV[9])
local cutoff = struct.pack('>I4', math.max(now - ttl, 0))
local stamp = struct.pack('>I4', now)

-- The swarm's state: counts, expiry, trim due times, in one packed field.
local count, due, expiry = {0, 0, 0, 0}, {0, 0, 0, 0}, nil
local state = redis.call('HGET', KEYS[1], 's')
if state then
  local x
  count[1], count[2], count[3], count[4], x, due[1], due[2], due[3], due[4] =
    struct.unpack('>I4I4I4I4I4I4I4I4I4', state)
  if x > 0 then expiry = x end
end
local changed = false
local function save_state()
  if changed then
    redis.call('HSET', KEYS[1], 's', struct.pack('>I4I4I4I4I4I4I4I4I4',
      count[1], count[2], count[3], count[4], expiry or 0, due[1], due[2], due[3], due[4]))
    changed = false
  end
end

-- Trim step: at most one peer hash per call, when its time has come. Each
-- step visits about 128 IPs (HSCAN), so no call holds Redis for long, and
-- steps come often enough that every peer is visited about every TTL/4.
for i = 1, 4 do
  if count[i] > 0 and due[i] <= now then
    local key = KEYS[1 + i]
    local resume = 'c' .. i
    local scan = redis.call('HSCAN', key, redis.call('HGET', KEYS[1], resume) or '0',
      'COUNT', 128)
    local items = scan[2]
    for j = 1, #items, 2 do
      local value, kept = items[j + 1], {}
      for p = 1, #value, REC do
        if string.sub(value, p + 2, p + 5) >= cutoff then
          kept[#kept + 1] = string.sub(value, p, p + REC - 1)
        end
      end
      local removed = (#value / REC) - #kept
      if removed > 0 then
        count[i] = count[i] - removed
        if #kept == 0 then redis.call('HDEL', key, items[j])
        else redis.call('HSET', key, items[j], table.concat(kept)) end
      end
    end
    local steps = math.max(1, math.ceil(count[i] / 128))
    due[i] = now + math.max(1, math.floor(ttl / 4 / steps))
    redis.call('HSET', KEYS[1], resume, scan[1])
    changed = true
    break
  end
end

local v6 = ARGV[2] == '6'
local own_s, own_l = 1, 2
if v6 then own_s, own_l = 3, 4 end
local ip, port, id = ARGV[3], ARGV[4], ARGV[5]
if #port ~= 2 or #id ~= 20 or #ip ~= (v6 and 16 or 4) then
  return redis.error_reply('ERR announce: malformed arguments')
end
local seeder = ARGV[6] == '1'
local role = seeder and own_s or own_l
local other = seeder and own_l or own_s

-- Find the announcer: same IP, and the same port or the same peer id. Its
-- role's hash first: most announces keep their role.
local at, at_pos
local values = {}
local same_ip = 0
for _, i in ipairs({role, other}) do
  if count[i] > 0 then
    local value = redis.call('HGET', KEYS[1 + i], ip)
    if value then
      values[i] = value
      same_ip = same_ip + #value / REC
      for p = 1, #value, REC do
        if string.sub(value, p, p + 1) == port or string.sub(value, p + 7, p + 26) == id then
          at, at_pos = i, p
          break
        end
      end
    end
    if at then break end
  end
end

local function counts_reply(status, downloaded)
  return {status, count[1] + count[3], count[2] + count[4], downloaded, now,
    count[1], count[2], count[3], count[4]}
end

-- Takes the announcer's record out of the hash it was found in.
local function remove_found()
  local value = values[at]
  local rest = string.sub(value, 1, at_pos - 1) .. string.sub(value, at_pos + REC)
  if rest == '' then redis.call('HDEL', KEYS[1 + at], ip)
  else redis.call('HSET', KEYS[1 + at], ip, rest) end
  values[at] = rest
  count[at] = count[at] - 1
  changed = true
end

if ARGV[1] == 's' then
  if at then remove_found() end
  save_state()
  return counts_reply(0, tonumber(redis.call('GET', KEYS[6])) or 0)
end

local completes = seeder and ARGV[7] == '1'
local flag = '-'
if at then
  flag = string.sub(values[at], at_pos + 6, at_pos + 6)
else
  local most = tonumber(ARGV[10])
  if most > 0 and count[1] + count[2] + count[3] + count[4] >= most then
    save_state()
    return counts_reply(1, 0)
  end
  -- The peers of one IP share a field that every announce from that IP
  -- reads: bounded, so that one address cannot make them slow.
  if same_ip >= MAX_PER_IP then
    save_state()
    return counts_reply(2, 0)
  end
end
local completed_now = completes and flag ~= 'c'
if completed_now then flag = 'c' end
local record = port .. stamp .. flag .. id

-- Write the record: in place, or moved to (or new in) its role's hash.
if at == role then
  local value = values[role]
  redis.call('HSET', KEYS[1 + role], ip,
    string.sub(value, 1, at_pos - 1) .. record .. string.sub(value, at_pos + REC))
else
  if at then remove_found() end
  local key = KEYS[1 + role]
  redis.call('HSET', key, ip, (values[role] or '') .. record)
  count[role] = count[role] + 1
  changed = true
  if count[role] == 1 and expiry then redis.call('EXPIREAT', key, expiry) end
end

-- Every key of the swarm shares one expiry time, pushed out to two TTLs
-- from now once less than one TTL is left: a swarm nobody announces to
-- vanishes by Redis's own expiry, all its keys at once.
if not expiry or expiry - now < ttl then
  expiry = now + 2 * ttl
  changed = true
  save_state()
  redis.call('EXPIREAT', KEYS[1], expiry)
  for i = 1, 4 do
    if count[i] > 0 then redis.call('EXPIREAT', KEYS[1 + i], expiry) end
  end
end
save_state()

local downloaded
if completed_now then downloaded = redis.call('INCR', KEYS[6])
else downloaded = tonumber(redis.call('GET', KEYS[6])) or 0 end

-- The peers sent back are drawn by HRANDFIELD commands pipelined right
-- after this script (one round trip still) and chosen by the node: passing
-- them through Lua cost more than all the rest of an announce.
return {0, count[1] + count[3], count[2] + count[4], downloaded, now,
  count[1], count[2], count[3], count[4]}
