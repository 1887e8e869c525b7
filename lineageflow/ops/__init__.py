"""Operations: the shared local Prefect server and the processes lineageflow starts."""
