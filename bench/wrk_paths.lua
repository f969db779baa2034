-- wrk: GET the paths of a file, one per line ("path<TAB>API key"), each thread walking its
-- own slice in order (so no path is asked twice before the slice is used up).
-- wrk -s bench/wrk_paths.lua URL -- FILE THREADS    (bench/volume.py)

local threads = 0

function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    local path, key = line:match("^(%S+)\t(%S+)$")
    if path then all[#all + 1] = {path, key} end
  end
  local per = math.max(1, math.floor(#all / tonumber(args[2])))
  first = index * per + 1
  last = math.min(#all, first + per - 1)
  at = first
  items = all
end

function request()
  local item = items[at]
  at = at + 1
  if at > last then at = first end
  return wrk.format("GET", item[1], {["X-API-Key"] = item[2]})
end
