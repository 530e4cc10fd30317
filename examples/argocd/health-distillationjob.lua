-- Argo CD health check for distillery.dev/v1alpha1 DistillationJob.
-- Lua 5.1 (Argo CD runs gopher-lua); the resource is the global `obj`.
-- Install it under the argocd-cm key
--   resource.customizations.health.distillery.dev_DistillationJob
-- (see argocd-cm-health.yaml, which must carry exactly this text; a unit test checks).

local progressing = {
  Pending = true,
  TeacherStarting = true,
  Generating = true,
  Training = true,
  Evaluating = true,
}

-- The condition that explains a failure: a condition whose status is "False" and that
-- has a reason; the most recently changed one wins (RFC 3339 times sort as strings),
-- then the first in the list.
local function failing_condition(conditions)
  local found = nil
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.status == "False" and c.reason ~= nil and c.reason ~= "" then
      if found == nil or (c.lastTransitionTime or "") > (found.lastTransitionTime or "") then
        found = c
      end
    end
  end
  return found
end

local function nonempty(s)
  return s ~= nil and s ~= ""
end

hs = {}

if obj.status == nil or not nonempty(obj.status.phase) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local phase = obj.status.phase
local message = obj.status.message

if progressing[phase] then
  hs.status = "Progressing"
  hs.message = nonempty(message) and message or phase
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = nonempty(message) and message or "Succeeded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = nonempty(message) and message or "Suspended"
elseif phase == "Failed" then
  hs.status = "Degraded"
  local c = failing_condition(obj.status.conditions)
  if c ~= nil then
    -- Prefer the job's own message; fall back to the condition's.
    local label = c.reason
    if nonempty(c.type) then
      label = label .. " (" .. c.type .. ")"
    end
    local detail = nonempty(message) and message or c.message
    if nonempty(detail) then
      hs.message = label .. ": " .. detail
    else
      hs.message = label
    end
  else
    hs.message = nonempty(message) and message or "Failed"
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end

return hs
