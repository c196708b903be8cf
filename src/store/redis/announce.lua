-- One announce, in one round trip, on one swarm (every key in one hash slot).
--
-- KEYS: 1 the swarm's index `PREFIX{HEX8}HEX32m`, the one key declared.
--       The swarm's other keys are named from it (its name without the
--       last "m", then "4s", "4l", "6s", "6l", "d"): each key declared
--       costs Redis about 2,300 instructions a call (its argument, its Lua
--       string, its slot), and most calls touch two keys. They share its
--       hash tag, so its hash slot, and Redis checks each key the script
--       touches: one on another master fails the call (an error, which the
--       node answers as storage unavailable), as a declared one would. The
--       fast path touches one list before it writes anything; the full
--       path first asks EXISTS of all six keys (below), so that a slot
--       half moved by a reshard fails the call before any write, as the
--       six declared keys did.
--       The keys, numbered as below:
--       1 the swarm (a hash: field "s" = the state, 64 bytes big-endian:
--         the peer counts of the four peer lists (u32), the keys' expiry
--         time (u32), when the next trim step of any list is due (u32,
--         4294967295: none has peers), the snatch count (a double: a copy
--         of key 6, so that no announce need read that key), when each
--         list's next trim step is due (u32), where each list's trim
--         resumes (u32); a 56-byte state (the layout before, without the
--         snatch count) is read and rewritten in this one; and the index:
--         field = a peer's IP bytes, value = one
--         7-byte entry per peer at that IP: list (1 byte, 1..4), slot (4,
--         big-endian), port (2)),
--       2 IPv4 seeders, 3 IPv4 leechers, 4 IPv6 seeders, 5 IPv6 leechers
--         (strings: an array of fixed-size records, one per peer, in slots
--         0..count-1: IP (4 or 16 bytes), port (2), last seen (4, big-endian
--         Unix seconds), flag (1: "c" counted as completed, "-" not), peer
--         id (20); bytes past count are zeros (the room a list grows
--         into, see `room`) or left over, the last-seen time of a vacated
--         slot zeroed),
--       6 the snatch count (a string; it never expires: a swarm's other
--         keys do), read only when the state is made again, written by a
--         completion.
-- ARGV: 1 the announce, packed in one string (big-endian): flags (1 byte,
--       "0" plus the sum of 1 stopped, 2 IPv6, 4 seeder, 8 event=completed,
--       so "0" to "?"), numwant
--       (u32), peer TTL in seconds (u32), most peers (u32, 0: no cap), now
--       (u32, Unix seconds, the node's clock), a random number (u32, where
--       windows start), port (2), peer id (20), IP (4 or 16 bytes); 47 or
--       59 bytes. One argument, not twelve: Redis makes an object and a Lua
--       string of each argument of every call, and twelve cost it about
--       1.5 µs a call more than one unpacked here.
--       A node that knows the swarm's counts passes numwant 0 and reads the
--       windows itself with plain GETRANGEs pipelined behind this script
--       (`sample::plan`): far cheaper for Redis than strings handed through Lua.
-- Returns one string (big-endian): status (u8: 0 ok, 1 swarm full, 2 too
--          many peers at this IP), now (u32), the four peer counts (u32:
--          IPv4 seeders, leechers, IPv6 seeders, leechers), the snatch
--          count (double); 29 bytes. When
--          windows are asked for (numwant > 0), then the four windows'
--          lengths (u32) and the windows: for each list, consecutive records
--          from a random slot (empty when nothing is wanted from it). The
--          node chooses the peers to send from the windows (`sample.rs`).
--          One string is far cheaper for the node's client to parse than an
--          array (about a thousand instructions a value) and no dearer for
--          Redis to return.
--
-- The rules are the in-memory store's: a peer is the same peer when it comes
-- from the same IP with the same port or the same peer id; seeders get
-- leechers only; the announcer is never in its own list; own family first;
-- a completion counts once per peer. Expired peers are trimmed a bounded
-- step at a time by the announces that touch the swarm, never by a sweep.

-- What a call costs Redis is mostly the interpreter's own work, not the
-- commands: each table built, closure made, `struct` field and `redis.call`
-- counts (a table or a closure about a third of a microsecond on this
-- project's test machine, a `redis.call` one to two). So the common call, a
-- peer refreshing itself with nothing else due, is answered first, by the
-- fast path below: no table, no closure, two calls; and so is a new peer at
-- an address of its own (three or four calls). Everything else takes the
-- full path after it.

local MAX_PER_IP = 128
local STEP = 64
local MAX_STEP = 1024
-- A list's string is rewritten whole to grow while its records take fewer
-- bytes than this (see `room`); past it, SETRANGE grows it in place and
-- Redis doubles the allocation, as a rewrite would copy that much.
local REWRITE = 32768
local ENTRY = 7
local NEVER = 4294967295
-- The state's head: the four counts, the expiry, the next trim step due,
-- the snatch count.
local HEAD = '>I4I4I4I4I4I4d'
local STATE = '>I4I4I4I4I4I4dI4I4I4I4I4I4I4I4'
-- The state before the snatch count was kept in it (56 bytes).
local STATE_56 = '>I4I4I4I4I4I4I4I4I4I4I4I4I4I4'
-- The reply's head: status, now, the four counts, the snatch count.
local REPLY = '>BI4I4I4I4I4d'
-- The bytes a list's string holds once written whole with `n` records of
-- `size` bytes: the whole records that fit the memory Redis allocates for
-- `n` anyway (jemalloc's size class of the string: 16-byte steps to 128,
-- then four steps per doubling; 3 bytes of header to 255 bytes, 5 past,
-- and a terminator). Records are written past the count into that room by
-- one SETRANGE, and only when it is full is the string rewritten: a
-- rewrite (GET, SET) costs an insert about a fifth of what Redis executes
-- for it (`benches/redis-instructions.sh`), and the room costs no memory.
-- Lists at or past REWRITE bytes are not padded.
local function room(n, size)
  local bytes = n * size
  if bytes >= REWRITE then return bytes end
  local need = bytes + (bytes < 256 and 4 or 6)
  local step = 16
  while step * 8 < need do step = step * 2 end
  local class = math.ceil(need / step) * step
  return math.floor((class - (class <= 256 and 4 or 6)) / size) * size
end
-- Writes `record` into slot `slot`, the next free one, of the list at
-- `key` (records of `size` bytes). A string written whole is
-- `room(count)` long (the bytes past the count zero: read as long
-- expired), so the record goes into that room by one SETRANGE when it
-- fits. Else the list is written whole again, with the room of its new
-- count: SETRANGE past a string's end would double its allocation, and
-- that slack was a third of a small swarm's memory. (A string written
-- otherwise, by a build before this room, grows by doubling until its
-- next rewrite.) A new list takes the swarm's expiry time `expiry` (0:
-- none yet) in the same SET.
local function insert(key, slot, size, record, expiry)
  local fits = room(slot, size)
  if slot > 0 and (fits >= (slot + 1) * size or fits >= REWRITE) then
    redis.call('SETRANGE', key, slot * size, record)
    return
  end
  local pad = room(slot + 1, size) - (slot + 1) * size
  local zeros = pad > 0 and string.rep('\0', pad) or ''
  if slot > 0 then
    -- A full room holds exactly the records: GET reads them without the
    -- two offsets of a GETRANGE (each number passed to redis.call is
    -- formatted as a double, about 2,000 instructions). After removals it
    -- may hold more. One concatenation: each string made costs.
    local held = redis.call('GET', key) or ''
    if #held > slot * size then held = string.sub(held, 1, slot * size) end
    record = held .. record .. zeros
  else
    record = record .. zeros
  end
  if slot == 0 and expiry > 0 then
    redis.call('SET', key, record, 'EXAT', expiry)
  else
    redis.call('SET', key, record, 'KEEPTTL')
  end
end
local packed = ARGV[1] or ''
local flags, numwant, ttl, most, now, random, port, id, rest
if #packed == 47 or #packed == 59 then
  flags, numwant, ttl, most, now, random, port, id, rest =
    struct.unpack('>BI4I4I4I4I4c2c20', packed)
end
-- The flags are read with arithmetic (Lua 5.1 has no bit operators).
flags = flags and flags - 48
local v6 = flags and flags % 4 >= 2
if not flags or flags < 0 or flags > 15 or #packed ~= (v6 and 59 or 47) then
  return redis.error_reply('ERR announce: malformed arguments')
end
local stop, seeder, completes = flags % 2 == 1, flags % 8 >= 4, flags >= 12
local ip = string.sub(packed, rest)
local INDEX = KEYS[1]
local own_s = v6 and 3 or 1
local iplen = v6 and 16 or 4
local role = seeder and own_s or own_s + 1
-- The announcer's list: the one key besides the index that the fast path
-- touches.
local own_key = string.sub(INDEX, 1, -2) ..
  (role == 1 and '4s' or role == 2 and '4l' or role == 3 and '6s' or '6l')
local size = v6 and 43 or 31
-- Lists 1, 2 hold IPv4 records (31 bytes, 4 of them the IP); 3, 4 IPv6
-- (43, 16): `l > 2 and 43 or 31`, `l > 2 and 16 or 4` below.

-- The swarm's state and the announcer's entries in one call: every
-- redis.call costs a command lookup, a cluster slot check and argument
-- copies, more than the work of most calls here.
local got = redis.call('HMGET', INDEX, 's', ip)
local state, entries = got[1], got[2] or ''

-- The fast path: the same peer again (same IP and port) in the same role,
-- no trim step due, the keys' expiry not to be pushed out, no completion
-- to count, no windows wanted. Only its last-seen time changes. The full
-- path below does exactly this in that case, at several times the cost.
-- The same conditions let a new peer at an IP the swarm does not hold yet
-- (no peer id to look for, no limit per IP to reach) be inserted here too,
-- the commonest of the dearer calls: what the full path's insert does,
-- written out without its state table and closures (about a tenth of the
-- call; `benches/redis-script.sh`).
if state and #state == 64 and not stop and not completes and numwant <= 0 then
  local c1, c2, c3, c4, expiry, due, snatched = struct.unpack(HEAD, state)
  if due > now and expiry > 0 and expiry - now >= ttl then
    for p = 1, #entries, ENTRY do
      if string.sub(entries, p + 5, p + 6) == port then
        if string.byte(entries, p) == role then
          local f = struct.unpack('>I4', entries, p + 1) * size + iplen + 2
          redis.call('SETRANGE', own_key, f, struct.pack('>I4', now))
          return struct.pack(REPLY, 0, now, c1, c2, c3, c4, snatched)
        end
        break
      end
    end
    if entries == '' and (most <= 0 or c1 + c2 + c3 + c4 < most) then
      local slot, key = role == 1 and c1 or role == 2 and c2 or role == 3 and c3 or c4, own_key
      insert(key, slot, size, ip .. port .. struct.pack('>I4', now) .. '-' .. id, expiry)
      -- Only the head changes, the state's tail is copied as it is; but
      -- for a list that was empty: its first trim step is scheduled (its
      -- own due time is at byte 33 + 4 * (role - 1) of the state).
      local tail
      if slot == 0 then
        local first = now + math.max(1, math.floor(ttl / 4))
        due = math.min(due, first)
        tail = string.sub(state, 33, 28 + 4 * role) .. struct.pack('>I4', first) ..
          string.sub(state, 33 + 4 * role)
      else
        tail = string.sub(state, 33)
      end
      if role == 1 then c1 = c1 + 1 elseif role == 2 then c2 = c2 + 1
      elseif role == 3 then c3 = c3 + 1 else c4 = c4 + 1 end
      redis.call('HSET', INDEX, 's', struct.pack(HEAD, c1, c2, c3, c4, expiry, due, snatched) ..
        tail, ip, struct.pack('>BI4', role, slot) .. port)
      return struct.pack(REPLY, 0, now, c1, c2, c3, c4, snatched)
    end
  end
end

-- The full path: the swarm's six keys, numbered as in KEYS above. The
-- EXISTS fails the call here, before any write, when any of them is on
-- another master (a slot half moved by a reshard).
local keys = {INDEX}
do
  local base = string.sub(INDEX, 1, -2)
  for i = 1, 4 do
    keys[i + 1] = i == role and own_key or
      base .. (i == 1 and '4s' or i == 2 and '4l' or i == 3 and '6s' or '6l')
  end
  keys[6] = base .. 'd'
end
redis.call('EXISTS', unpack(keys))
local stamp = struct.pack('>I4', now)
-- The state, one table: 1-4 the peer counts of the four lists, 5 the keys'
-- expiry time (0: none yet), 6 when the next trim step of any list is due,
-- 7-10 when each list's next trim step is due, 11-14 where each list's trim
-- resumes. The snatch count is kept apart from it, in `snatched`.
local st, snatched
local changed = false
if state and #state == 64 then
  st = {struct.unpack(STATE, state)}
  snatched = table.remove(st, 7)
else
  if state and #state == 56 then
    st = {struct.unpack(STATE_56, state)}
    -- Rewritten in the new layout by this call.
    changed = true
  else
    st = {0, 0, 0, 0, 0, NEVER, 0, 0, 0, 0, 0, 0, 0, 0}
  end
  -- The swarm's keys expired (or never were): its snatch count did not.
  snatched = tonumber(redis.call('GET', keys[6]) or 0) or 0
end
-- Index fields to write (false: to delete), all in the state's HSET at the
-- end: a stop or a trim rewrites two or three. Reads go through it
-- (`pending[ip]`, then HGET when nil: written out where used, since a
-- helper would be one more closure made on every call). A new
-- peer's own entries, the one write of the commonest full path, wait in
-- two locals instead (no table).
local pending, entry_ip, entry_value
local function save_state()
  local packed_state = changed and
    struct.pack(STATE, st[1], st[2], st[3], st[4], st[5], st[6], snatched, unpack(st, 7, 14))
  if pending then
    local hset, deleted
    if changed then hset = {'HSET', INDEX, 's', packed_state} end
    for field, value in pairs(pending) do
      if value then
        hset = hset or {'HSET', INDEX}
        hset[#hset + 1], hset[#hset + 2] = field, value
      else
        deleted = deleted or {'HDEL', INDEX}
        deleted[#deleted + 1] = field
      end
    end
    if hset then redis.call(unpack(hset)) end
    if deleted then redis.call(unpack(deleted)) end
  elseif changed and entry_ip then
    redis.call('HSET', INDEX, 's', packed_state, entry_ip, entry_value)
  elseif changed then
    redis.call('HSET', INDEX, 's', packed_state)
  elseif entry_ip then
    redis.call('HSET', INDEX, entry_ip, entry_value)
  end
  changed, pending, entry_ip = false, nil, nil
end

-- Removes the peer in `slot` of `list` (at `ip`, whose entries the caller
-- may pass): its index entry goes, and the list's last record moves into
-- the hole (its entry follows), so the records stay dense in slots
-- 0..count-1.
local function drop(list, slot, ip, held)
  pending = pending or {}
  if not held then
    held = pending[ip]
    if held == nil then held = redis.call('HGET', INDEX, ip) end
    held = held or ''
  end
  for p = 1, #held, ENTRY do
    if string.byte(held, p) == list and struct.unpack('>I4', held, p + 1) == slot then
      held = string.sub(held, 1, p - 1) .. string.sub(held, p + ENTRY)
      break
    end
  end
  pending[ip] = held ~= '' and held
  local key, size, iplen = keys[1 + list], list > 2 and 43 or 31, list > 2 and 16 or 4
  local last = st[list] - 1
  if slot ~= last then
    local moved = redis.call('GETRANGE', key, last * size, last * size + size - 1)
    redis.call('SETRANGE', key, slot * size, moved)
    local mip = string.sub(moved, 1, iplen)
    local its = pending[mip]
    if its == nil then its = redis.call('HGET', INDEX, mip) end
    its = its or ''
    for p = 1, #its, ENTRY do
      if string.byte(its, p) == list and struct.unpack('>I4', its, p + 1) == last then
        its = string.sub(its, 1, p) .. struct.pack('>I4', slot) .. string.sub(its, p + 5)
        break
      end
    end
    pending[mip] = its ~= '' and its
  end
  st[list] = last
  changed = true
  if last == 0 then
    redis.call('DEL', key)
  elseif last % 16 == 0 and redis.call('STRLEN', key) > 2 * last * size + 4096 then
    -- Leftover bytes past the records are given back once they are many
    -- (looked at every 16th removal: the length only changes here); the
    -- string keeps the room of its count.
    local kept = room(last, size)
    redis.call('SET', key, redis.call('GETRANGE', key, 0, last * size - 1) ..
      string.rep('\0', kept - last * size), 'KEEPTTL')
  else
    -- The vacated slot reads as long expired: the node's window reads
    -- (plain GETRANGEs after this script) may reach past the count when
    -- another client's announce ran between the two.
    redis.call('SETRANGE', key, last * size + iplen + 2, '\0\0\0\0')
  end
end

-- Trim step: at most one list per call, when its time has come. Each step
-- reads STEP records (more with a short TTL) from where the last one
-- stopped, so no call holds Redis for long, and steps come often enough
-- that every peer is visited about every TTL/4.
local trimmed = false
if st[6] <= now then
  for i = 1, 4 do
    local n = st[i]
    if n > 0 and st[6 + i] <= now then
      local size, iplen = i > 2 and 43 or 31, i > 2 and 16 or 4
      local cutoff = struct.pack('>I4', math.max(now - ttl, 0))
      -- Steps come at most once a second: with a short TTL and a big list
      -- they read more at a time (bounded), so each peer is still visited
      -- about every TTL/4.
      local step = math.max(STEP, math.min(MAX_STEP, math.ceil(n * 4 / ttl)))
      local from = st[10 + i]
      if from >= n then from = 0 end
      local to = math.min(from + step, n)
      local chunk = redis.call('GETRANGE', keys[1 + i], from * size, to * size - 1)
      -- From the end: a removal fills its hole from the list's end, never a
      -- slot this step has still to read.
      for slot = to - 1, from, -1 do
        local at = (slot - from) * size
        if string.sub(chunk, at + iplen + 3, at + iplen + 6) < cutoff then
          drop(i, slot, string.sub(chunk, at + 1, at + iplen))
          trimmed = true
        end
      end
      if to >= st[i] then st[10 + i] = 0 else st[10 + i] = to end
      local steps = math.max(1, math.ceil(st[i] / step))
      st[6 + i] = now + math.max(1, math.floor(ttl / 4 / steps))
      break
    end
  end
  local due = NEVER
  for i = 1, 4 do
    if st[i] > 0 and st[6 + i] < due then due = st[6 + i] end
  end
  st[6] = due
  changed = true
end

-- Find the announcer: same IP, and the same port or the same peer id.
-- A trim step may have dropped or moved records of this IP.
if trimmed then
  local held = pending[ip]
  if held == nil then held = redis.call('HGET', INDEX, ip) end
  entries = held or ''
end
local at, at_slot, by_port
for p = 1, #entries, ENTRY do
  if string.sub(entries, p + 5, p + 6) == port then
    at, at_slot, by_port = string.byte(entries, p), struct.unpack('>I4', entries, p + 1), true
    break
  end
end
if not at then
  for p = 1, #entries, ENTRY do
    local list, slot = string.byte(entries, p), struct.unpack('>I4', entries, p + 1)
    local base = slot * (list > 2 and 43 or 31) + (list > 2 and 16 or 4) + 7
    if redis.call('GETRANGE', keys[1 + list], base, base + 19) == id then
      at, at_slot = list, slot
      break
    end
  end
end

-- The early answers carry the counts and no windows.
if stop then
  if at then drop(at, at_slot, ip, entries) end
  save_state()
  return struct.pack(REPLY, 0, now, st[1], st[2], st[3], st[4], snatched)
end

local flag
if at then
  if completes or at ~= role or not by_port then
    -- The announcer's flag, read only when it matters.
    local f = at_slot * (at > 2 and 43 or 31) + (at > 2 and 16 or 4) + 6
    flag = redis.call('GETRANGE', keys[1 + at], f, f)
  end
else
  local status = 0
  if most > 0 and st[1] + st[2] + st[3] + st[4] >= most then
    status = 1
  elseif #entries / ENTRY >= MAX_PER_IP then
    -- The peers of one IP share an index field that every announce from
    -- that IP reads: bounded, so that one address cannot make them slow.
    status = 2
  end
  if status > 0 then
    save_state()
    return struct.pack(REPLY, status, now, st[1], st[2], st[3], st[4], snatched)
  end
  flag = '-'
end
local completed_now = completes and flag ~= 'c'
if completed_now then flag = 'c' end

if at == role and by_port then
  -- The same peer again, in place: its last-seen time (and flag, when it
  -- just completed).
  local f = at_slot * size + iplen + 2
  redis.call('SETRANGE', keys[1 + role], f, completed_now and (stamp .. 'c') or stamp)
elseif at == role then
  -- Same peer id, new port: the record and its index entry change.
  redis.call('SETRANGE', keys[1 + role], at_slot * size, ip .. port .. stamp .. flag .. id)
  for p = 1, #entries, ENTRY do
    if string.byte(entries, p) == role and struct.unpack('>I4', entries, p + 1) == at_slot then
      entries = string.sub(entries, 1, p + 4) .. port .. string.sub(entries, p + ENTRY)
      break
    end
  end
  pending = pending or {}
  pending[ip] = entries
else
  if at then
    drop(at, at_slot, ip, entries)
    entries = pending[ip] or ''
  end
  -- New in its role's list: the record goes in the next free slot.
  local key, slot = keys[1 + role], st[role]
  insert(key, slot, size, ip .. port .. stamp .. flag .. id, st[5])
  local value = entries .. string.char(role) .. struct.pack('>I4', slot) .. port
  if pending then pending[ip] = value else entry_ip, entry_value = ip, value end
  st[role] = slot + 1
  changed = true
  if slot == 0 then
    -- A list that was empty gets its first trim step a quarter TTL from
    -- now: its one record cannot expire before a whole TTL, and a step due
    -- at once (a list never trimmed has its due time 0) would send the
    -- swarm's next announce down this full path for nothing.
    st[6 + role] = now + math.max(1, math.floor(ttl / 4))
    st[6] = math.min(st[6], st[6 + role])
  end
end

-- Every key of the swarm shares one expiry time, pushed out to two TTLs
-- from now once less than one TTL is left: a swarm nobody announces to
-- vanishes by Redis's own expiry, all its keys at once.
local renew = st[5] == 0 or st[5] - now < ttl
if renew then
  st[5] = now + 2 * ttl
  changed = true
end
if completed_now then
  snatched = redis.call('INCR', keys[6])
  changed = true
end
save_state()
if renew then
  redis.call('EXPIREAT', INDEX, st[5])
  for i = 1, 4 do
    if st[i] > 0 then redis.call('EXPIREAT', keys[1 + i], st[5]) end
  end
end

local left = numwant
if left <= 0 then
  -- The node reads the windows itself (or wants no peers).
  return struct.pack(REPLY, 0, now, st[1], st[2], st[3], st[4], snatched)
end

-- Windows: `k` consecutive records of list `i` from a random slot (all of
-- them when it holds no more), the node picks from them. How many from
-- each list follows the memory store's rules, with two spare for the
-- announcer and for peers gone but not yet trimmed.
local windows = {'', '', '', ''}
local function window(i, k)
  local n, rec = st[i], i > 2 and 43 or 31
  if n == 0 or k <= 0 then return '' end
  if k >= n then return redis.call('GETRANGE', keys[1 + i], 0, n * rec - 1) end
  local from = random % n
  local to = from + k
  if to <= n then
    return redis.call('GETRANGE', keys[1 + i], from * rec, to * rec - 1)
  end
  return redis.call('GETRANGE', keys[1 + i], from * rec, n * rec - 1) ..
    redis.call('GETRANGE', keys[1 + i], 0, (to - n) * rec - 1)
end
-- Own family first, then the other.
for base = own_s, 4 - own_s, 4 - 2 * own_s do
  if left <= 0 then break end
  local s, l = st[base], st[base + 1]
  if seeder then
    windows[base + 1] = window(base + 1, math.min(left, l) + 2)
    left = left - l
  elseif s + l > 0 then
    local share = math.min(math.floor((left * s + math.floor((s + l) / 2)) / (s + l)), s)
    windows[base] = window(base, share + 2)
    windows[base + 1] = window(base + 1, math.min(left - share, l) + 2)
    left = left - s - l
  end
end

local w1, w2, w3, w4 = windows[1], windows[2], windows[3], windows[4]
return struct.pack(REPLY .. 'I4I4I4I4', 0, now, st[1], st[2], st[3], st[4], snatched,
  #w1, #w2, #w3, #w4) .. w1 .. w2 .. w3 .. w4
