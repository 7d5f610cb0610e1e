{{- define "countersign.name" -}}{{ .Release.Name }}-countersign{{- end -}}
{{- define "countersign.secret" -}}
{{- if .Values.secrets.existingSecret -}}{{ .Values.secrets.existingSecret }}{{- else -}}{{ include "countersign.name" . }}{{- end -}}
{{- end -}}
{{- define "countersign.labels" -}}
app.kubernetes.io/name: countersign
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
