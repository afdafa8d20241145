{{- define "kubepd.labels" -}}
app.kubernetes.io/name: kubepd-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The headless Service (and pod subdomain) naming the operator pod with TLS on. */ -}}
{{- define "kubepd.operatorDomain" -}}
{{ .Release.Name }}-kubepd-operator
{{- end -}}
