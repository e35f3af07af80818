{{/* Names, labels, API versions and the restricted security contexts shared by every template. */}}

{{- define "clawdbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "clawdbot.fullname" -}}
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

{{/* Names of the components (40 characters of the full name leave room for the suffixes). */}}
{{- define "clawdbot.operator" -}}{{ include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-operator{{- end -}}
{{- define "clawdbot.router" -}}{{ include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-router{{- end -}}
{{- define "clawdbot.postgres" -}}{{ include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-postgres{{- end -}}
{{- define "clawdbot.redis" -}}{{ include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-redis{{- end -}}
{{- define "clawdbot.plans" -}}{{ include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-plans{{- end -}}

{{/* The Secret the router reads: the user's own, or the chart's. */}}
{{- define "clawdbot.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "clawdbot.fullname" . | trunc 40 | trimSuffix "-" }}-secrets
{{- end -}}
{{- end -}}

{{/* Namespace of the tenants (UserWorkspaces, ModelEndpoints and their children). */}}
{{- define "clawdbot.tenantNamespace" -}}
{{- default .Release.Namespace .Values.tenancy.namespace -}}
{{- end -}}

{{- define "clawdbot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The recommended labels; call with (dict "ctx" $ "component" "router"). */}}
{{- define "clawdbot.labels" -}}
helm.sh/chart: {{ include "clawdbot.chart" .ctx }}
{{ include "clawdbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: clawdbot-cloud
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "clawdbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clawdbot.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
API versions. On a live cluster .Capabilities.APIVersions is what the API server serves, so the
Has check alone decides. Offline (`helm template`, lint) it is Helm's fixed list of every
built-in version, whatever --kube-version says, so the kube version decides there too: policy/v1
PodDisruptionBudget from 1.21, autoscaling/v2 HorizontalPodAutoscaler from 1.23.
*/}}
{{- define "clawdbot.pdb.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{- define "clawdbot.hpa.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security Standard: the pod and container halves. */}}
{{- define "clawdbot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 65532 }}
runAsGroup: {{ .uid | default 65532 }}
fsGroup: {{ .uid | default 65532 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "clawdbot.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
A value of the chart's Secret: the one given in values, else the one already in the cluster
(kept across upgrades), else a new random one when `generate` is set. Returns "" otherwise.
Call with (dict "ctx" $ "key" "ROUTER_ADMIN_TOKEN" "value" .Values.secrets.adminToken
"generate" 48).
*/}}
{{- define "clawdbot.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "clawdbot.secretName" .ctx) -}}
{{- $old := "" -}}
{{- if and $existing $existing.data -}}
{{- $old = index $existing.data .key | default "" | b64dec -}}
{{- end -}}
{{- if .value -}}
{{- .value -}}
{{- else if $old -}}
{{- $old -}}
{{- else if .generate -}}
{{- randAlphaNum (int .generate) -}}
{{- end -}}
{{- end -}}

{{/* A generated password kept across upgrades, for the bundled Postgres and Redis. */}}
{{- define "clawdbot.keptPassword" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing $existing.data (index $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* Image reference from {repository, tag}. */}}
{{- define "clawdbot.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* Base URL the world reaches the router at ("" when unknown). */}}
{{- define "clawdbot.publicUrl" -}}
{{- if .Values.router.publicUrl -}}
{{- .Values.router.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tlsSecretName "")) .Values.ingress.host -}}
{{- end -}}
{{- end -}}
