-- Argo CD health check for countersign.dev/ChangeSet (countersign: docs/gitops.md): the
-- requests one GitOps sync or one `countersign request -f` opened together, reviewed as
-- one. A set is Pending, then Approved, Rejected or Expired; once every member was admitted
-- it follows them (Approved while they roll out, then Deployed or Failed). Its members roll
-- out each on its own and have their own check. Lua 5.1 as gopher-lua runs it, with only the base and
-- table libraries (what Argo CD gives a check from argocd-cm): no string library. Every
-- field may be absent or of another type; the script never errors.
local hs = {}

local function get(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

local function text(v)
  if type(v) == "string" and v ~= "" then
    return v
  end
  if type(v) == "number" then
    return tostring(v)
  end
  return nil
end

local function list(v)
  if type(v) == "table" then
    return v
  end
  return {}
end

local status = get(obj, "status")
local phase = text(get(status, "phase"))

-- "2 changes", from spec.members; nil when it is not a list.
local function changes()
  local members = get(get(obj, "spec"), "members")
  if type(members) ~= "table" then
    return nil
  end
  local count = #members
  if count == 1 then
    return "1 change"
  end
  return tostring(count) .. " changes"
end

-- The message of status condition `kind` whose status is `wanted`, if it has one.
local function condition(kind, wanted)
  for _, c in ipairs(list(get(status, "conditions"))) do
    if get(c, "type") == kind and get(c, "status") == wanted then
      return text(get(c, "message"))
    end
  end
  return nil
end

-- "waiting for approval of 2 changes at level leads: 1 of 2 approvals; required: carol"
local function waiting()
  local message = "waiting for approval"
  local what = changes()
  if what ~= nil then
    message = message .. " of " .. what
  end
  local levels = list(get(status, "levels"))
  local index = get(status, "currentLevel")
  local level = nil
  if type(index) == "number" then
    level = levels[index]
  end
  if type(level) ~= "table" then
    level = nil
    for i, l in ipairs(levels) do
      if type(l) == "table" and get(l, "satisfied") ~= true then
        level, index = l, i
        break
      end
    end
  end
  if level == nil then
    return message
  end
  local name = text(get(level, "name")) or text(index) or "?"
  message = message .. " at level " .. name
  local approvals = text(get(level, "approvals")) or "0"
  local required = text(get(level, "required"))
  if required ~= nil then
    message = message .. ": " .. approvals .. " of " .. required .. " approvals"
  end
  local missing = {}
  for _, who in ipairs(list(get(level, "missingRequired"))) do
    if text(who) ~= nil then
      table.insert(missing, text(who))
    end
  end
  if #missing > 0 then
    message = message .. "; required: " .. table.concat(missing, ", ")
  end
  return message
end

-- "rejected by carol: <her comment>"
local function rejected()
  local by = text(get(status, "rejectedBy"))
  local comment = nil
  for _, review in ipairs(list(get(get(obj, "spec"), "reviews"))) do
    if get(review, "decision") == "Reject" and (by == nil or get(review, "user") == by) then
      by = by or text(get(review, "user"))
      comment = text(get(review, "comment"))
    end
  end
  if by == nil then
    return "rejected"
  end
  if comment == nil then
    return "rejected by " .. by
  end
  return "rejected by " .. by .. ": " .. comment
end

if phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for countersign"
elseif phase == "Pending" then
  -- As a request: waiting on people is Suspended; a level that can no longer be
  -- satisfied waits on nobody, and only a rejection ends it before it expires.
  local stuck = condition("Satisfiable", "False")
  if stuck ~= nil then
    hs.status = "Degraded"
    hs.message = stuck
  else
    hs.status = "Suspended"
    hs.message = waiting()
  end
elseif phase == "Approved" then
  -- Nothing is wrong and nobody is waited on: the next apply of each member's change is
  -- admitted, and each member's own health follows its rollout.
  hs.status = "Healthy"
  local what = changes()
  if what == nil then
    hs.message = "approved; waiting for the changes to be applied"
  else
    hs.message = "approved; waiting for its " .. what .. " to be applied"
  end
  local expires = text(get(status, "expiresAt"))
  if expires ~= nil then
    hs.message = hs.message .. " before " .. expires
  end
elseif phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = rejected()
elseif phase == "Expired" then
  hs.status = "Degraded"
  hs.message = "expired"
  local expires = text(get(status, "expiresAt"))
  if expires ~= nil then
    hs.message = "expired at " .. expires
  end
elseif phase == "Deployed" then
  -- Every member rolled out (each member's own health says how).
  hs.status = "Healthy"
  hs.message = "deployed: " .. (changes() or "its changes") .. " rolled out"
elseif phase == "Failed" then
  -- Every member's rollout ended, and at least one failed: the member says why.
  hs.status = "Degraded"
  hs.message = "a rollout failed: see the Failed request among its " .. (changes() or "changes")
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. phase
end
return hs
