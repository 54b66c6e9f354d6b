-- Argo CD health check for countersign.dev/DeploymentApproval (countersign: docs/gitops.md).
-- Lua 5.1 as gopher-lua runs it, with only the base and table libraries (what Argo CD
-- gives a check from argocd-cm): no string library. Every field may be absent or of
-- another type; the script never errors.
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
local rollout = get(status, "rollout")

-- The message of status condition `kind`, if it has one.
local function condition(kind, wanted)
  for _, c in ipairs(list(get(status, "conditions"))) do
    if get(c, "type") == kind and (wanted == nil or get(c, "status") == wanted) then
      return text(get(c, "message"))
    end
  end
  return nil
end

-- What the rollout waits for or why it ended: status.rollout.message, else the
-- RolledOut condition's message.
local function rollout_message()
  return text(get(rollout, "message")) or condition("RolledOut", nil)
end

-- "waiting for approval at level leads: 1 of 2 approvals; required: carol"
local function waiting()
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
    return "waiting for approval"
  end
  local name = text(get(level, "name")) or text(index) or "?"
  local message = "waiting for approval at level " .. name
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
  -- A level whose named approvers are used up can never be satisfied: nobody is
  -- waited on any more, only a rejection ends it before it expires.
  local stuck = condition("Satisfiable", "False")
  if stuck ~= nil then
    hs.status = "Degraded"
    hs.message = stuck
  else
    hs.status = "Suspended"
    hs.message = waiting()
  end
elseif phase == "Approved" then
  -- Nothing is wrong and countersign waits for nothing: the next apply of exactly this
  -- change is admitted. Progressing would wait on the sync that this approval lets through.
  hs.status = "Healthy"
  hs.message = "approved; waiting for the change to be applied"
  local expires = text(get(status, "expiresAt"))
  if expires ~= nil then
    hs.message = hs.message .. " before " .. expires
  end
elseif phase == "Deploying" then
  hs.status = "Progressing"
  hs.message = "rolling out"
  local message = rollout_message()
  if message ~= nil then
    hs.message = "rolling out: " .. message
  end
elseif phase == "Deployed" then
  hs.status = "Healthy"
  hs.message = "deployed"
  local message = rollout_message()
  if message ~= nil then
    hs.message = "deployed: " .. message
  end
elseif phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = rejected()
elseif phase == "Expired" then
  -- The deadline, not status.rollout.message: an approval that went back to Approved
  -- keeps the message of the admission that never arrived ("it may be applied again").
  hs.status = "Degraded"
  hs.message = "expired"
  local expires = text(get(status, "expiresAt"))
  if expires ~= nil then
    hs.message = "expired at " .. expires
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "rollout failed"
  local message = rollout_message()
  if message ~= nil then
    hs.message = "rollout failed: " .. message
  end
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. phase
end
return hs
