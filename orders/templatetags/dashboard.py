from django import template

from orders.selectors import dashboard_figures

register = template.Library()


@register.simple_tag
def order_dashboard():
    return dashboard_figures()
