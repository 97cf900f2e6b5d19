SELECT ${source} AS x
