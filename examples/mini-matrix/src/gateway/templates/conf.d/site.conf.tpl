# Rendered by the prepare step from .env (as build.sh renders src/nginx/conf.d).
server_name {{EXTERNAL_HOST}}
public_url {{PUBLIC_URL}}
backend {{POSTGRES_HOST}}:{{POSTGRES_PORT}}
