module github.com/example/mini-matrix/src/backend

go 1.19
