{{/* Names and labels shared by every object of the release. */}}
{{- define "llamafleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llamafleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: controlplane, gateway, agent, redis. */}}
{{- define "llamafleet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- /* A label map as a label selector string: k1=v1,k2=v2 (sorted). */ -}}
{{- define "llamafleet.selectorString" -}}
{{- $terms := list -}}
{{- range $key, $value := . }}{{ $terms = append $terms (printf "%s=%s" $key $value) }}{{ end -}}
{{- join "," $terms -}}
{{- end -}}

{{- /* agent.labels as the JSON list of KEY=VALUE the control plane reads. */ -}}
{{- define "llamafleet.agentLabels" -}}
{{- $terms := list -}}
{{- range $key, $value := . }}{{ $terms = append $terms (printf "%s=%s" $key $value) }}{{ end -}}
{{- toJson $terms -}}
{{- end -}}

{{- define "llamafleet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "llamafleet.controlplaneAddress" -}}
{{ include "llamafleet.fullname" . }}-controlplane:{{ .Values.controlplane.grpcPort }}
{{- end -}}

{{/* Locked-down security contexts: non-root, no privilege escalation, no capabilities. */}}
{{- define "llamafleet.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "llamafleet.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "llamafleet.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "llamafleet.httpProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* Secrets of the cluster's PKI: the chart's generated ones unless security.pki names others. */}}
{{- define "llamafleet.pkiSecret" -}}
{{ .Values.security.pki.existingSecret | default (printf "%s-pki" (include "llamafleet.fullname" .)) }}
{{- end -}}
{{- define "llamafleet.joinSecret" -}}
{{ .Values.security.pki.joinSecret | default (printf "%s-join" (include "llamafleet.fullname" .)) }}
{{- end -}}
{{- define "llamafleet.gatewayTlsSecret" -}}
{{ .Values.security.pki.gatewaySecret | default (printf "%s-gateway-tls" (include "llamafleet.fullname" .)) }}
{{- end -}}

{{/* What platform teams set on every pod of a component (dict "root" $ "values" $component):
     labels and annotations on the pod, priority, runtime class, topology spread, pull secrets. */}}
{{- define "llamafleet.podMetadataExtras" -}}
{{- with .values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "llamafleet.podAnnotations" -}}
{{- with .values.podAnnotations }}
annotations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "llamafleet.podSpecExtras" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The container's own args and env after the chart's (extraArgs: more flags; extraEnv: EnvVar list). */}}
{{- define "llamafleet.extraArgs" -}}
{{- range .values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- /* OTLP trace export (monitoring.tracing): the gateways' and the agents' (whose engines inherit it). */ -}}
{{- define "llamafleet.tracingEnv" -}}
{{- with .Values.monitoring.tracing.otlpEndpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ . | quote }}}
- {name: OTEL_TRACES_SAMPLER, value: parentbased_traceidratio}
- {name: OTEL_TRACES_SAMPLER_ARG, value: {{ $.Values.monitoring.tracing.sampleRatio | quote }}}
{{- end }}
{{- end -}}

{{- define "llamafleet.extraEnv" -}}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "llamafleet.redisPasswordSecret" -}}
{{ .Values.redis.passwordSecret | default (printf "%s-redis" (include "llamafleet.fullname" .)) }}
{{- end -}}

{{/* The namespaces whose Models the control plane serves, as JSON: watchNamespaces, else the
     release's own (watchAllNamespaces: every namespace, with a ClusterRole). */}}
{{- define "llamafleet.watchedNamespaces" -}}
{{- if .Values.controlplane.watchNamespaces }}{{ toJson .Values.controlplane.watchNamespaces }}{{ else }}{{ toJson (list .Release.Namespace) }}{{ end }}
{{- end -}}

{{/* controlplane.modelNamespaces (pattern → namespaces) as --kubernetes-model-namespaces entries, JSON. */}}
{{- define "llamafleet.modelNamespaceRules" -}}
{{- $rules := list }}
{{- range $pattern, $namespaces := .modelNamespaces }}
{{- $rules = append $rules (printf "%s=%s" $pattern (join "," $namespaces)) }}
{{- end }}
{{- toJson $rules }}
{{- end -}}
