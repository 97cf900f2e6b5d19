{{/* The chart's name, as app.kubernetes.io/name. */}}
{{- define "kudig.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: objects are named after it (the release name when it contains "kudig"). */}}
{{- define "kudig.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kudig.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the controller's pods (never change them: Deployment selectors are immutable). */}}
{{- define "kudig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kudig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Standard labels of every object of the release. */}}
{{- define "kudig.labels" -}}
helm.sh/chart: {{ include "kudig.chart" . }}
{{ include "kudig.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kudig
{{- end }}

{{- define "kudig.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kudig.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kudig.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "kudig.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (.Values.runner.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The one namespace the controller watches ("" = all); more than one is refused. */}}
{{- define "kudig.watchNamespace" -}}
{{- if gt (len .Values.watchNamespaces) 1 }}
{{- fail (printf "watchNamespaces: the kudig controller watches one namespace or all of them (got %d); install one release per namespace" (len .Values.watchNamespaces)) }}
{{- end }}
{{- if .Values.watchNamespaces }}{{ first .Values.watchNamespaces }}{{ end }}
{{- end }}

{{/*
The controller's RBAC rules for namespaced resources: what the controller's code calls and nothing
more (tests/unit/test_helm_chart.py ties every verb to a call in the code or in kopf).
*/}}
{{- define "kudig.namespacedRules" -}}
- apiGroups: ["kudig.io"]
  resources: ["workflows"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kudig.io"]
  resources: ["sessions"]  # create: scheduled, triggered, required; delete: history; patch: labels, reruns
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["kudig.io"]
  resources: ["workflows/status", "sessions/status"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]  # results too large for a termination message come through the log
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]  # project files (get); task results and inputs of a Session (create; delete: replaced row chunks)
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]  # Session events (started, task failed, retrying, succeeded, ...)
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped: kopf lists and watches the CRDs to find the resources it watches. */}}
{{- define "kudig.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/* The notifier's settings as a JSON object of digdag's `notification.*` keys (KUDIG_NOTIFICATION):
     `notifications.mail.bodyTemplate` becomes `notification.mail.body_template`, each header
     `notification.http.headers.<Name>`; empty values are left out. */}}
{{- define "kudig.notification" -}}
{{- $n := .Values.notifications | default dict -}}
{{- $out := dict "notification.type" $n.type "notification.retries" $n.retries -}}
{{- range $kind := list "mail" "http" -}}
{{- range $k, $v := (get $n $kind | default dict) -}}
{{- if eq $k "headers" -}}
{{- range $h, $hv := $v -}}
{{- $_ := set $out (printf "notification.http.headers.%s" $h) $hv -}}
{{- end -}}
{{- else if and (not (kindIs "invalid" $v)) (ne (toString $v) "") (ne (toJson $v) "[]") -}}
{{- $_ := set $out (printf "notification.%s.%s" $kind (ternary "body_template" $k (eq $k "bodyTemplate"))) $v -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}

{{- end }}

{{/* The web UI's pods (component ui; the controller's selector never matches them). */}}
{{- define "kudig.uiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kudig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ui
{{- end }}

{{- define "kudig.uiLabels" -}}
helm.sh/chart: {{ include "kudig.chart" . }}
{{ include "kudig.uiSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kudig
{{- end }}

{{/* What the web UI reads (docs/ui.md "Security model"): get/list/watch, never secrets. */}}
{{- define "kudig.uiViewerRules" -}}
- apiGroups: ["kudig.io"]
  resources: ["sessions", "workflows"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods", "pods/log", "configmaps", "namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
