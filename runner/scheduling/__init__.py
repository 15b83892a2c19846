"""Cron ticks, the scheduler loop, backfills, and schedules exported to crontab/systemd."""
