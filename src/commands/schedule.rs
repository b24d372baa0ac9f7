//! `schedule add|list|edit|cancel`: the arguments to the engine (`crate::schedule`), its answer
//! to the reporter.

use std::collections::HashMap;
use std::process::ExitCode;

use crate::cli::{Common, ScheduleCommand};
use crate::report::{emit, schedule_text, Scheduled};
use crate::schedule::{self, AddRequest, Context, EditRequest};

pub async fn run(
    command: ScheduleCommand,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let common: &Common = match &command {
        ScheduleCommand::Add { common, .. }
        | ScheduleCommand::List { common, .. }
        | ScheduleCommand::Edit { common, .. }
        | ScheduleCommand::Cancel { common, .. } => common,
    };
    let json = common.json;
    let setup = super::setup(common, env).await?;
    let ctx = Context {
        store: setup.store.as_ref(),
        settings: &setup.settings,
        templates: &setup.templates,
        now: setup.clock.start(),
    };
    let out = match command {
        ScheduleCommand::Add {
            contact,
            at,
            body,
            every,
            channel,
            connection,
            media_url,
            caption,
            created_by,
            ..
        } => {
            let req = AddRequest {
                contacts: contact,
                at,
                body,
                every,
                channel,
                connection,
                media_url,
                caption,
                created_by,
            };
            Scheduled::Added(schedule::add(&ctx, &req).await?)
        }
        ScheduleCommand::List { contact, created_by, .. } => {
            Scheduled::Listed(ctx.store.list_scheduled(None, contact, created_by.as_deref()).await?)
        }
        ScheduleCommand::Edit {
            id,
            body,
            at,
            every,
            channel,
            connection,
            media_url,
            caption,
            created_by,
            ..
        } => {
            let req = EditRequest { body, at, every, channel, connection, media_url, caption };
            Scheduled::Edited(schedule::edit(&ctx, id, &req, created_by.as_deref()).await?)
        }
        ScheduleCommand::Cancel { id, created_by, .. } => {
            let (row, queued) = schedule::cancel(ctx.store, id, created_by.as_deref()).await?;
            Scheduled::Cancelled(row, queued)
        }
    };
    emit(&if json {
        out.to_json().to_string()
    } else {
        schedule_text(&out, setup.settings.timezone)
    });
    Ok(ExitCode::SUCCESS)
}
