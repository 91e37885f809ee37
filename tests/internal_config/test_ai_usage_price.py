from decimal import Decimal

from internal_config.models import AIUsageLog, Config, TokenPrices


def test_request_price_is_input_price_times_prompt_plus_output_price_times_completion(user):
    Config.objects.filter(name="token_input_price").update(value="1.5e-7")
    Config.objects.filter(name="token_output_price").update(value="7.5e-7")
    log = AIUsageLog.objects.create(user=user, query="q", prompt_tokens=1000, completion_tokens=200)

    breakdown = log.get_price_breakdown()

    assert breakdown.cost_input == Decimal("0.00015")
    assert breakdown.cost_output == Decimal("0.00015")
    assert log.get_request_price() == Decimal("0.00030")


def test_request_price_uses_prices_read_once_when_given(user, django_assert_num_queries):
    log = AIUsageLog.objects.create(user=user, query="q", prompt_tokens=10, completion_tokens=10)
    prices = TokenPrices(input=Decimal(1), output=Decimal(2))

    with django_assert_num_queries(0):
        assert log.get_request_price(prices) == Decimal(30)


def test_unparseable_price_counts_as_zero(user):
    Config.objects.filter(name="token_input_price").update(value="cheap")
    log = AIUsageLog.objects.create(user=user, query="q", prompt_tokens=10, completion_tokens=0)

    assert log.get_request_price() == Decimal(0)
