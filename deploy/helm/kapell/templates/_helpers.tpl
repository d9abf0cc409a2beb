{{/* Names, labels and the image, shared by every template. */}}

{{/* Objects are named after the release: the operator's Service is `<release>-operator`. */}}
{{- define "kapell.fullname" -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "kapell.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selectorLabels COMPONENT: what a Deployment, Service and PDB of one component select. */}}
{{- define "kapell.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kapell.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kapell.operatorName" -}}
{{ include "kapell.fullname" . }}-operator
{{- end -}}

{{- define "kapell.gatewayName" -}}
{{ include "kapell.fullname" . }}-gateway
{{- end -}}

{{- define "kapell.operatorServiceAccount" -}}
{{ .Values.operator.serviceAccount.name | default (include "kapell.operatorName" .) }}
{{- end -}}

{{- define "kapell.gatewayServiceAccount" -}}
{{ .Values.gateway.serviceAccount.name | default (include "kapell.gatewayName" .) }}
{{- end -}}

{{/* The namespace whose Models the gateway serves. */}}
{{- define "kapell.gatewayNamespace" -}}
{{ .Values.gateway.namespace | default .Values.operator.watchNamespace | default .Release.Namespace }}
{{- end -}}

{{- define "kapell.nodeAgentName" -}}
{{ include "kapell.fullname" . }}-node-agent
{{- end -}}

{{/* podSpecCommon: pull secrets, security context and scheduling of one component's values. */}}
{{- define "kapell.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
