-- One announce, in one round trip, on one swarm (every key in one hash slot).
--
-- KEYS: 1 meta (hash: s4 l4 s6 l6 = peer counts, x = the keys' expiry time,
--         n.. / c.. = when and where the next trim step of each peer hash is),
--       2 IPv4 seeders, 3 IPv4 leechers, 4 IPv6 seeders, 5 IPv6 leechers
--         (hashes: field = the peer's IP bytes; value = one 27-byte record per
--         peer at that IP: port(2) last-seen(4, big-endian unix seconds)
--         flags(1: "c" counted as completed, "-" not) peer id(20)),
--       6 the snatch count (a string; it never expires).
-- ARGV: 1 "a" announce or "s" stopped, 2 "4"/"6", 3 IP bytes, 4 port (2 bytes),
--       5 peer id, 6 "1" seeder, 7 "1" event=completed, 8 numwant,
--       9 "1" peer ids wanted, 10 peer TTL (seconds), 11 most peers (0: no cap).
-- Returns {status (0 ok, 1 swarm full, 2 too many peers at this IP), complete, incomplete, downloaded,
--          IPv4 peers, IPv6 peers, IPv4 ids, IPv6 ids} (compact strings).
--
-- The rules are the in-memory store's: a peer is the same peer when it comes
-- from the same IP with the same port or the same peer id; seeders get
-- leechers only; the announcer is never in its own list; own family first;
-- a completion counts once per peer. Expired peers are trimmed a bounded
-- step at a time by the announces that touch the swarm, never by a sweep.

local REC = 27
local MAX_PER_IP = 128
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[10])
local cutoff = struct.pack('>I4', math.max(now - ttl, 0))
local stamp = struct.pack('>I4', now)

local names = {'s4', 'l4', 's6', 'l6'}
local m = redis.call('HMGET', KEYS[1], 's4', 'l4', 's6', 'l6', 'x',
  'ns4', 'nl4', 'ns6', 'nl6', 'cs4', 'cl4', 'cs6', 'cl6')
local count, changed = {}, false
for i = 1, 4 do count[i] = tonumber(m[i]) or 0 end
local expiry = tonumber(m[5])
local set = {}

-- Trim step: at most one peer hash per call, when its time has come. Each
-- step visits about 128 IPs (HSCAN), so no call holds Redis for long, and
-- steps come often enough that every peer is visited about every TTL/4.
for i = 1, 4 do
  local due = tonumber(m[5 + i]) or 0
  if count[i] > 0 and due <= now then
    local key = KEYS[1 + i]
    local scan = redis.call('HSCAN', key, m[9 + i] or '0', 'COUNT', 128)
    local items = scan[2]
    for j = 1, #items, 2 do
      local value, kept = items[j + 1], {}
      for p = 1, #value, REC do
        local rec = string.sub(value, p, p + REC - 1)
        if string.sub(rec, 3, 6) >= cutoff then kept[#kept + 1] = rec end
      end
      local removed = (#value / REC) - #kept
      if removed > 0 then
        count[i] = count[i] - removed
        if #kept == 0 then redis.call('HDEL', key, items[j])
        else redis.call('HSET', key, items[j], table.concat(kept)) end
      end
    end
    local steps = math.max(1, math.ceil(count[i] / 128))
    set[#set + 1] = 'n' .. names[i]
    set[#set + 1] = now + math.max(1, math.floor(ttl / 4 / steps))
    set[#set + 1] = 'c' .. names[i]
    set[#set + 1] = scan[1]
    changed = true
    break
  end
end

local v6 = ARGV[2] == '6'
local own_s, own_l = 1, 2
if v6 then own_s, own_l = 3, 4 end
local ip, port, id = ARGV[3], ARGV[4], ARGV[5]

-- Find the announcer: same IP, and the same port or the same peer id.
local at, at_value, at_pos
local same_ip = 0
for _, i in ipairs({own_s, own_l}) do
  if count[i] > 0 then
    local value = redis.call('HGET', KEYS[1 + i], ip)
    if value then
      same_ip = same_ip + #value / REC
      for p = 1, #value, REC do
        if string.sub(value, p, p + 1) == port or string.sub(value, p + 7, p + 26) == id then
          at, at_value, at_pos = i, value, p
          break
        end
      end
    end
    if at then break end
  end
end

local function without(value, pos)
  return string.sub(value, 1, pos - 1) .. string.sub(value, pos + REC)
end

local function counts_reply(status, downloaded)
  return {status, count[1] + count[3], count[2] + count[4], downloaded, '', '', '', ''}
end

local function save_meta()
  if changed then
    for i = 1, 4 do
      set[#set + 1] = names[i]
      set[#set + 1] = count[i]
    end
    redis.call('HSET', KEYS[1], unpack(set))
  end
end

if ARGV[1] == 's' then
  if at then
    local rest = without(at_value, at_pos)
    if rest == '' then redis.call('HDEL', KEYS[1 + at], ip)
    else redis.call('HSET', KEYS[1 + at], ip, rest) end
    count[at] = count[at] - 1
    changed = true
  end
  save_meta()
  return counts_reply(0, tonumber(redis.call('GET', KEYS[6])) or 0)
end

local seeder = ARGV[6] == '1'
local completes = seeder and ARGV[7] == '1'
local role = seeder and own_s or own_l
local flag = '-'
if at then
  flag = string.sub(at_value, at_pos + 6, at_pos + 6)
else
  local most = tonumber(ARGV[11])
  if most > 0 and count[1] + count[2] + count[3] + count[4] >= most then
    save_meta()
    return counts_reply(1, 0)
  end
  -- The peers of one IP share a field that every announce from that IP
  -- reads: bounded, so that one address cannot make them slow.
  if same_ip >= MAX_PER_IP then
    save_meta()
    return counts_reply(2, 0)
  end
end
local completed_now = completes and flag ~= 'c'
if completed_now then flag = 'c' end
local record = port .. stamp .. flag .. id

-- Write the record: in place, or moved to the other role's hash.
if at == role then
  redis.call('HSET', KEYS[1 + role], ip,
    string.sub(at_value, 1, at_pos - 1) .. record .. string.sub(at_value, at_pos + REC))
else
  if at then
    local rest = without(at_value, at_pos)
    if rest == '' then redis.call('HDEL', KEYS[1 + at], ip)
    else redis.call('HSET', KEYS[1 + at], ip, rest) end
    count[at] = count[at] - 1
  end
  local key = KEYS[1 + role]
  local value = redis.call('HGET', key, ip)
  redis.call('HSET', key, ip, (value or '') .. record)
  count[role] = count[role] + 1
  changed = true
  if count[role] == 1 and expiry then redis.call('EXPIREAT', key, expiry) end
end

-- Every key of the swarm shares one expiry time, pushed out to two TTLs
-- from now once less than one TTL is left: a swarm nobody announces to
-- vanishes by Redis's own expiry, all its keys at once.
if not expiry or expiry - now < ttl then
  expiry = now + 2 * ttl
  set[#set + 1] = 'x'
  set[#set + 1] = expiry
  changed = true
  save_meta()
  changed = false
  redis.call('EXPIREAT', KEYS[1], expiry)
  for i = 1, 4 do
    if count[i] > 0 then redis.call('EXPIREAT', KEYS[1 + i], expiry) end
  end
end
save_meta()

local downloaded
if completed_now then downloaded = redis.call('INCR', KEYS[6])
else downloaded = tonumber(redis.call('GET', KEYS[6])) or 0 end

-- Sample up to numwant peers: own family first, then the other; a seeder
-- gets leechers only; never the announcer; never a peer past its TTL.
local want = tonumber(ARGV[8])
local with_ids = ARGV[9] == '1'
local out = {{}, {}}
local ids = {{}, {}}

local function take(i, k, fam)
  if k <= 0 or count[i] <= 0 then return 0 end
  local mine = (i == role)
  local ask = k
  if mine then ask = k + 1 end
  local got = 0
  local items = redis.call('HRANDFIELD', KEYS[1 + i], ask, 'WITHVALUES')
  for j = 1, #items, 2 do
    local addr, value = items[j], items[j + 1]
    -- Many peers behind one IP share a field: start at a random one of
    -- them, so that each is as likely to be sent as any other peer.
    local n = #value / REC
    local first = math.random(n) - 1
    for r = 0, n - 1 do
      if got >= k then return got end
      local p = ((first + r) % n) * REC + 1
      local rec = string.sub(value, p, p + REC - 1)
      local me = mine and addr == ip and string.sub(rec, 1, 2) == port
      if not me and string.sub(rec, 3, 6) >= cutoff then
        local list = out[fam]
        list[#list + 1] = addr .. string.sub(rec, 1, 2)
        if with_ids then
          local l = ids[fam]
          l[#l + 1] = string.sub(rec, 8, 27)
        end
        got = got + 1
      end
    end
  end
  return got
end

local function family(s, l, fam, k)
  if seeder then return take(l, k, fam) end
  local others = count[s] + count[l]
  if others == 0 then return 0 end
  local ks = math.min(count[s], math.floor(k * count[s] / others + 0.5))
  local got = take(l, k - ks, fam)
  return got + take(s, k - got, fam)
end

local other_s, other_l, own_fam, other_fam = 3, 4, 1, 2
if v6 then other_s, other_l, own_fam, other_fam = 1, 2, 2, 1 end
local got = family(own_s, own_l, own_fam, want)
family(other_s, other_l, other_fam, want - got)

return {0, count[1] + count[3], count[2] + count[4], downloaded,
  table.concat(out[1]), table.concat(out[2]), table.concat(ids[1]), table.concat(ids[2])}
