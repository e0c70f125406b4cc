-- Shared prelude, prepended to every quota script when it is loaded.
-- Time is the server's (TIME), in integer microseconds; numbers that Redis must read as
-- integers are formatted with int() (Lua would otherwise print large ones as 1e+15).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
  return string.format('%.0f', x)
end

-- A sliding-log member is "<cost>:<reservation token>"; its cost leads.
local function member_cost(m)
  return tonumber(string.match(m, '^%d+'))
end
