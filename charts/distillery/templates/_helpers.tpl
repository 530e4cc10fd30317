{{/*
Names and labels shared by every template. Other templates (clusterrole.yaml among them)
use `distillery.fullname` for object names and `distillery.labels` for labels.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "distillery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: fullnameOverride, else the release name plus the chart
name unless the release name already contains it. 63 characters at most (DNS label).
*/}}
{{- define "distillery.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The chart label value: name-version. */}}
{{- define "distillery.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pod; never change them on upgrade (selectors are immutable). */}}
{{- define "distillery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "distillery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of every object the chart creates. Note: managed-by is Helm here; the objects the
operator creates for a job carry `app.kubernetes.io/managed-by: distillery` instead (the
PodMonitor selects those).
*/}}
{{- define "distillery.labels" -}}
helm.sh/chart: {{ include "distillery.chart" . }}
{{ include "distillery.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: distillery
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "distillery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "distillery.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* [imageRegistry/]repository:tag of an image values block ({repository, tag}); the tag defaults to appVersion. */}}
{{- define "distillery.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- $registry := trimSuffix "/" ($root.Values.imageRegistry | default "") -}}
{{- $repository := ternary (printf "%s/%s" $registry $image.repository) $image.repository (ne $registry "") -}}
{{- printf "%s:%s" $repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/*
The value of the `job` label that Prometheus gives the operator's scrape target. The
alerts in rules/alerts.yaml and the dashboards match on it, so it is fixed, not per release.
*/}}
{{- define "distillery.scrapeJob" -}}
distillery-operator
{{- end -}}

{{/*
What the operator may do in a namespace where it runs jobs, and nothing more: a ClusterRole's
rules when it watches every namespace, a Role's in each namespace of `watchNamespaces`.
tests/integration/test_rbac.py records every request the operator makes in the integration
tests and fails when a rule here is missing or was never needed.
*/}}
{{- define "distillery.namespacedRules" -}}
# The jobs: watched; their status written; deleted after ttlSecondsAfterFinished.
- apiGroups: ["distillery.dev"]
  resources: ["distillationjobs"]
  verbs: ["list", "watch", "delete"]
- apiGroups: ["distillery.dev"]
  resources: ["distillationjobs/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion: where owner references are enforced, setting it needs
# update on the owner's finalizers subresource.
- apiGroups: ["distillery.dev"]
  resources: ["distillationjobs/finalizers"]
  verbs: ["update"]
# Children: watched (with a label selector) into the operator's cache, created when absent.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "delete"]  # delete: the teacher goes as soon as it is not needed
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "delete"]  # a teacher of several replicas behind a Kueue queue (one pod group)
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]  # patch: suspend; delete: stop a job that ended
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]  # training.launcher jobset: as the training Job
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "delete"]  # the teacher's Service (deleted with it) and the training's (nodes > 1)
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create"]  # get: an existing claimName exists before anything starts
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "delete"]  # delete: the teacher's NetworkPolicy goes with it
# Stage pods: their termination messages carry each stage's summary; their addresses, its progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# A Kubernetes Event for each transition.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.operator.guard.secretLabel }}
# The guard: the labels of the Secrets a job names (the operator asks for their metadata only).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end -}}

{{/* A price table as the operator reads it: TYPE=PRICE,... in a stable order. */}}
{{- define "distillery.prices" -}}
{{- $items := list -}}
{{- range $type, $price := . -}}
{{- $items = append $items (printf "%s=%v" $type $price) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/*
The relabelings of the PodMonitors (workers, teacher): the pod's DistillationJob as
`distillery_job` and its stage as `stage` (the Prometheus Operator already adds `namespace`,
`pod`, `container` and `job`, the scrape job "<namespace>/<PodMonitor>"), then the user's own.
*/}}
{{- define "distillery.podRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_distillery_dev_job]
  targetLabel: distillery_job
- sourceLabels: [__meta_kubernetes_pod_label_distillery_dev_stage]
  targetLabel: stage
{{- with .relabelings }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A label map as `key=value,...` (keys sorted), as DISTILLERY_SCRAPER_POD_LABELS reads it. */}}
{{- define "distillery.labelPairs" -}}
{{- $pairs := list }}
{{- range $key := keys . | sortAlpha }}{{ $pairs = append $pairs (printf "%s=%s" $key (index $ $key)) }}{{ end }}
{{- join "," $pairs }}
{{- end }}
