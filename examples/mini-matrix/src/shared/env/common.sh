# Shell defaults shared by the component scripts (not used in any image yet).
: "${TZ:=UTC}"
export TZ
