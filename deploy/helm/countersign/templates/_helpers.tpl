{{- define "countersign.name" -}}{{ .Release.Name }}-countersign{{- end -}}
{{- define "countersign.secret" -}}
{{- if .Values.secrets.existingSecret -}}{{ .Values.secrets.existingSecret }}{{- else -}}{{ include "countersign.name" . }}{{- end -}}
{{- end -}}
{{- /* The Secret (kubernetes.io/tls: tls.crt, tls.key) holding the gateway CA. */ -}}
{{- define "countersign.gatewayCaSecret" -}}
{{- if .Values.mtls.existingSecret -}}{{ .Values.mtls.existingSecret }}{{- else -}}{{ include "countersign.name" . }}-gateway-ca{{- end -}}
{{- end -}}
{{- define "countersign.labels" -}}
app.kubernetes.io/name: countersign
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
