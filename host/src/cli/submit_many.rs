//! `kozmo submit --many FILE.jsonl`: one task body per line, sent in batches
//! (`POST /v1/executions:batch`), each batch durable before its answer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::client::Client;

/// A task body and the line it came from (1-based).
struct Line {
    number: usize,
    body: Value,
}

fn read_lines(file: &Path) -> anyhow::Result<Vec<Line>> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        ))
    };
    let mut lines = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {} at line {}", file.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not valid JSON (one task body per line)",
                file.display(),
                i + 1
            )
        })?;
        lines.push(Line { number: i + 1, body });
    }
    if lines.is_empty() {
        anyhow::bail!("{} holds no task (one JSON task body per line)", file.display());
    }
    Ok(lines)
}

/// Runs `kozmo submit --many`: prints each accepted id on stdout (in file
/// order), each refusal on stderr with its line; exit 0 if every line was
/// accepted, 1 if some were refused, 2 if a batch was rejected whole.
pub fn submit_many(client: &Client, file: &Path, batch_size: usize) -> anyhow::Result<ExitCode> {
    let lines = read_lines(file)?;
    let (mut created, mut existed, mut refused) = (0usize, 0usize, 0usize);
    for chunk in lines.chunks(batch_size.max(1)) {
        let body = Value::Array(chunk.iter().map(|l| l.body.clone()).collect());
        let (status, answer) = client.post_any("/v1/executions:batch", &body)?;
        if status != 200 {
            let first_line = chunk[0].number;
            eprintln!(
                "error: the batch of lines {first_line}-{} was refused ({status} {}): {}",
                chunk[chunk.len() - 1].number,
                answer["error"].as_str().unwrap_or("error"),
                answer["detail"].as_str().unwrap_or_default()
            );
            for e in answer["errors"].as_array().into_iter().flatten() {
                let line = e["index"]
                    .as_u64()
                    .and_then(|i| chunk.get(i as usize))
                    .map(|l| l.number);
                eprintln!(
                    "  line {}: {}{}",
                    line.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    e["path"].as_str().map(|p| format!("`{p}`: ")).unwrap_or_default(),
                    e["detail"].as_str().unwrap_or_default()
                );
            }
            eprintln!(
                "submitted before this batch: {created} created, {existed} already existed, {refused} refused; \
                 nothing of this batch or after it was submitted"
            );
            return Ok(ExitCode::from(2));
        }
        for (item, line) in answer["items"].as_array().into_iter().flatten().zip(chunk) {
            match item["status"].as_u64() {
                Some(201) | Some(200) => {
                    if item["status"] == 201 {
                        created += 1;
                    } else {
                        existed += 1;
                    }
                    println!("{}", item["id"].as_str().unwrap_or_default());
                }
                _ => {
                    refused += 1;
                    eprintln!(
                        "line {}: refused ({} {}): {}",
                        line.number,
                        item["status"],
                        item["error"].as_str().unwrap_or("error"),
                        item["detail"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    eprintln!(
        "{} lines: {created} created, {existed} already existed, {refused} refused",
        lines.len()
    );
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
