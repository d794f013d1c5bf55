{{/* Name of the chart's objects: the release name, with the chart name unless it contains it. */}}
{{- define "cachewire.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cachewire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cachewire
{{- end -}}

{{- define "cachewire.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "cachewire.writerName" -}}
{{ include "cachewire.fullname" . }}-writer
{{- end -}}

{{/* The origin URL the nodes load misses from (cachenode --origin). */}}
{{- define "cachewire.origin" -}}
{{- if .Values.origin -}}
{{ .Values.origin }}
{{- else if .Values.writer.enabled -}}
grpc://{{ include "cachewire.writerName" . }}:{{ .Values.writer.grpcPort }}
{{- end -}}
{{- end -}}

{{/* Secret holding the Redis password, or nothing when there is no password. */}}
{{- define "cachewire.redisSecret" -}}
{{- if .Values.redis.password.existingSecret -}}
{{ .Values.redis.password.existingSecret }}
{{- else if .Values.redis.password.value -}}
{{ include "cachewire.fullname" . }}-redis
{{- end -}}
{{- end -}}

{{- define "cachewire.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
