"""The sample microservices built on sessionlib: gateway (8080) and cart (8081).

Each is a FastAPI app runnable as `uvicorn services.<name>.app:app`; shared parts live in
`services.common`.
"""
