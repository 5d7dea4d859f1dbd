# expect: service-test tests/unit/test_code_rules.py app.secret_as_plain_str.PaymentSettings.api_key
# mypy: ignore-errors
"""A secret typed as plain `str`: any log line or error that shows the model prints the key."""

from pydantic import BaseModel


class PaymentSettings(BaseModel):
    """Settings of the payment provider."""

    base_url: str = "https://payments.example.com"
    api_key: str = ""
