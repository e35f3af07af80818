//! The dashboard's words in English and Russian: one table, looked up by key. The language is
//! the `cb_lang` cookie (set by the switch) or else the browser's `Accept-Language`.

use axum::http::HeaderMap;

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim().to_ascii_lowercase().split(['-', '_']).next()? {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// The cookie's choice, else the first language of `Accept-Language` we speak (browsers
    /// list them in order of preference), else English.
    pub fn of_request(headers: &HeaderMap) -> Lang {
        if let Some(l) =
            super::guard::cookie(headers, super::guard::LANG).and_then(|c| Lang::parse(&c))
        {
            return l;
        }
        headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|tag| Lang::parse(tag.split(';').next().unwrap_or("")))
            .next()
            .unwrap_or(Lang::En)
    }

    /// The words for `key`; the key itself when the table lacks it (a test checks that every
    /// key used by a template is in the table).
    pub fn t(self, key: &str) -> &'static str {
        match TABLE.iter().find(|(k, _, _)| *k == key) {
            Some((_, en, ru)) => match self {
                Lang::En => en,
                Lang::Ru => ru,
            },
            None => {
                tracing::warn!(key, "dashboard text missing");
                "?"
            }
        }
    }

    pub fn has(key: &str) -> bool {
        TABLE.iter().any(|(k, _, _)| *k == key)
    }

    /// An error in words a person understands, without internals.
    pub fn explain(self, e: &ApiError) -> String {
        match e {
            ApiError::Invalid { field, message } => {
                // The accounts service words its rules in English; the password rules are
                // in the table, so a Russian page says them in Russian.
                let message = match (self, field.as_deref()) {
                    (Lang::Ru, Some("password" | "new_password")) => self.t("pw.rules"),
                    _ => message.as_str(),
                };
                let field = field
                    .as_deref()
                    .map(|f| format!("field.{f}"))
                    .filter(|k| Lang::has(k))
                    .map(|k| self.t(&k));
                match field {
                    Some(f) => format!("{}: {f}: {message}", self.t("err.invalid")),
                    None => format!("{}: {message}", self.t("err.invalid")),
                }
            }
            ApiError::Rejected(s, _) if s.as_u16() == 401 => self.t("err.credentials").into(),
            ApiError::Unauthorized => self.t("err.credentials").into(),
            ApiError::Conflict(m) => format!("{} ({m})", self.t("err.conflict")),
            ApiError::Forbidden(m) => format!("{} ({m})", self.t("err.forbidden")),
            ApiError::NotFound(_) => self.t("err.not_found").into(),
            ApiError::TooManyAttempts(secs) => {
                format!("{} {}", self.t("err.too_many"), secs.div_ceil(60))
            }
            ApiError::ChannelDisabled => self.t("err.channel_off").into(),
            ApiError::PaymentProvider { reachable, .. } => self
                .t(if *reachable {
                    "err.stripe_refused"
                } else {
                    "err.stripe_down"
                })
                .into(),
            _ => self.t("err.internal").into(),
        }
    }
}

/// (key, English, Russian).
const TABLE: &[(&str, &str, &str)] = &[
    ("app.name", "Clawdbot", "Clawdbot"),
    ("skip", "Skip to content", "Перейти к содержанию"),
    ("nav.label", "Sections", "Разделы"),
    ("nav.home", "Home", "Главная"),
    ("nav.channels", "Channels", "Каналы"),
    ("nav.chat", "Chat", "Чат"),
    ("nav.sessions", "Sessions", "Диалоги"),
    ("settings.language", "Language", "Язык"),
    ("settings.language.save", "Save language", "Сохранить язык"),
    ("nav.keys", "API keys", "API-ключи"),
    ("nav.models", "Models", "Модели"),
    ("nav.settings", "Settings", "Настройки"),
    ("nav.billing", "Billing", "Оплата"),
    ("nav.admin", "Admin", "Администрирование"),
    ("nav.logout", "Log out", "Выйти"),
    ("pref.lang", "Language", "Язык"),
    ("pref.theme", "Theme", "Тема"),
    ("pref.apply", "Apply", "Применить"),
    ("theme.auto", "As the system", "Как в системе"),
    ("theme.light", "Light", "Светлая"),
    ("theme.dark", "Dark", "Тёмная"),
    ("lang.en", "English", "English"),
    ("lang.ru", "Русский", "Русский"),
    // Sign up, log in.
    ("signup.title", "Create your account", "Создайте аккаунт"),
    ("signup.submit", "Create account", "Создать аккаунт"),
    (
        "signup.have",
        "Already have an account?",
        "Уже есть аккаунт?",
    ),
    ("login.title", "Log in", "Вход"),
    ("login.submit", "Log in", "Войти"),
    ("login.none", "No account yet?", "Ещё нет аккаунта?"),
    ("login.link", "Log in", "Войти"),
    ("signup.link", "Sign up", "Зарегистрироваться"),
    // Google sign-in.
    ("google.or", "Or", "Или"),
    (
        "google.button",
        "Continue with Google",
        "Войти через Google",
    ),
    (
        "google.conflict",
        "An account with this e-mail already exists. Log in with its password.",
        "Аккаунт с этим адресом уже есть. Войдите с его паролем.",
    ),
    (
        "google.forbidden",
        "Google sign-in was refused: the account is suspended or Google has not verified the e-mail.",
        "Вход через Google отклонён: аккаунт приостановлен или Google не подтвердил адрес.",
    ),
    (
        "google.failed",
        "Google sign-in did not finish. Please start again.",
        "Вход через Google не завершён. Начните заново.",
    ),
    ("field.email", "E-mail", "Электронная почта"),
    ("field.password", "Password", "Пароль"),
    ("field.display_name", "Display name", "Имя"),
    (
        "field.current_password",
        "Current password",
        "Текущий пароль",
    ),
    ("field.new_password", "New password", "Новый пароль"),
    ("field.key", "Key", "Ключ"),
    ("field.provider", "Provider", "Провайдер"),
    ("field.model", "Model", "Модель"),
    ("field.temperature", "Temperature", "Температура"),
    ("field.max_tokens", "Max tokens", "Максимум токенов"),
    (
        "pw.rules",
        "Password rules: 10 to 128 characters, not only digits, and not containing your e-mail address.",
        "Правила пароля: от 10 до 128 символов, не только цифры и без вашего адреса почты.",
    ),
    // Home.
    ("home.title", "Your assistant", "Ваш ассистент"),
    ("home.state", "State", "Состояние"),
    ("state.starting", "Starting", "Запускается"),
    (
        "state.starting.hint",
        "Your assistant is being set up. This takes a minute or two; this page updates by itself.",
        "Ассистент настраивается. Это займёт минуту-другую; страница обновится сама.",
    ),
    ("state.ready", "Ready", "Готов"),
    (
        "state.ready.hint",
        "Your assistant answers messages.",
        "Ассистент отвечает на сообщения.",
    ),
    ("state.asleep", "Asleep", "Спит"),
    (
        "state.asleep.hint",
        "It sleeps when idle and wakes up with the next message.",
        "Он засыпает без дела и просыпается со следующим сообщением.",
    ),
    ("state.waking", "Waking up", "Просыпается"),
    (
        "state.waking.hint",
        "A message woke it up; it answers in a few seconds.",
        "Сообщение разбудило его; ответ будет через несколько секунд.",
    ),
    ("state.failed", "Needs attention", "Требует внимания"),
    (
        "state.failed.hint",
        "Your assistant could not start. We are looking into it; please try again later.",
        "Ассистент не смог запуститься. Мы разбираемся; попробуйте позже.",
    ),
    ("state.suspended", "Suspended", "Приостановлен"),
    (
        "state.suspended.hint",
        "This account is suspended; messages do not reach the assistant.",
        "Аккаунт приостановлен; сообщения не доходят до ассистента.",
    ),
    ("home.usage", "Usage", "Использование"),
    ("home.today", "Today", "Сегодня"),
    ("home.week", "Last 7 days", "За 7 дней"),
    ("home.messages", "Messages", "Сообщения"),
    ("home.tokens", "Tokens", "Токены"),
    (
        "home.chart",
        "Messages per day over the last 7 days",
        "Сообщения по дням за последние 7 дней",
    ),
    ("home.channels", "Connected channels", "Подключённые каналы"),
    ("home.recent", "Recent activity", "Последние диалоги"),
    (
        "home.recent.none",
        "No conversation yet.",
        "Диалогов пока нет.",
    ),
    ("home.recent.all", "All conversations", "Все диалоги"),
    (
        "home.connect",
        "Connect a chat app",
        "Подключить мессенджер",
    ),
    // Sessions.
    ("sessions.title", "Conversations", "Диалоги"),
    (
        "sessions.hint",
        "Your conversations with the assistant, per chat app, most recent first.",
        "Ваши диалоги с ассистентом по мессенджерам, сначала последние.",
    ),
    ("sessions.filters", "Show", "Показать"),
    ("sessions.channel", "Chat app", "Мессенджер"),
    ("sessions.any_channel", "All chat apps", "Все мессенджеры"),
    ("sessions.period", "Period", "Период"),
    ("sessions.any_time", "Any time", "За всё время"),
    ("sessions.days7", "Last 7 days", "Последние 7 дней"),
    ("sessions.days30", "Last 30 days", "Последние 30 дней"),
    ("sessions.show", "Show", "Показать"),
    ("sessions.list", "Conversations", "Диалоги"),
    (
        "sessions.none",
        "No conversation matches.",
        "Подходящих диалогов нет.",
    ),
    ("sessions.messages", "messages", "сообщ."),
    ("sessions.last", "last", "последнее"),
    ("sessions.pages", "Pages", "Страницы"),
    ("sessions.page", "Page", "Страница"),
    ("sessions.prev", "Previous page", "Предыдущая страница"),
    ("sessions.next", "Next page", "Следующая страница"),
    (
        "sessions.unavailable.none",
        "Your assistant does not exist yet. Try again shortly.",
        "Ваш ассистент ещё не создан. Попробуйте чуть позже.",
    ),
    (
        "sessions.unavailable.suspended",
        "This account is suspended, so its assistant is not running.",
        "Аккаунт приостановлен, ассистент не работает.",
    ),
    (
        "sessions.unavailable.asleep",
        "Your assistant is asleep. It is waking up now: reload in a few seconds.",
        "Ассистент спит. Он просыпается: обновите страницу через несколько секунд.",
    ),
    (
        "sessions.unavailable.starting",
        "Your assistant is starting. Reload in a few seconds.",
        "Ассистент запускается. Обновите страницу через несколько секунд.",
    ),
    (
        "sessions.unavailable.error",
        "Your assistant could not be read from just now.",
        "Не удалось получить данные от ассистента.",
    ),
    ("session.title", "Conversation", "Диалог"),
    ("session.back", "All conversations", "Все диалоги"),
    ("session.messages", "Messages", "Сообщения"),
    ("session.older", "Older messages", "Более ранние сообщения"),
    ("session.newest", "Newest messages", "Последние сообщения"),
    ("session.none", "No messages.", "Сообщений нет."),
    ("session.you", "You", "Вы"),
    ("session.assistant", "Assistant", "Ассистент"),
    // Channels.
    ("channels.title", "Channels", "Каналы"),
    ("channels.connected", "Connected", "Подключено"),
    (
        "channels.none",
        "Nothing is connected yet.",
        "Пока ничего не подключено.",
    ),
    ("channels.since", "since", "с"),
    ("channels.disconnect", "Disconnect", "Отключить"),
    (
        "channels.new",
        "Connect a chat app",
        "Подключить мессенджер",
    ),
    (
        "channels.new.hint",
        "Get a one-time code, then open a link or scan its QR code with your phone. The code works once, for ten minutes.",
        "Получите одноразовый код, затем откройте ссылку или отсканируйте QR-код телефоном. Код действует один раз, десять минут.",
    ),
    (
        "channels.get_code",
        "Get a connection code",
        "Получить код подключения",
    ),
    ("channels.code", "Your code", "Ваш код"),
    ("channels.expires", "valid until", "действует до"),
    ("channels.telegram", "Telegram", "Telegram"),
    (
        "channels.telegram.hint",
        "Open the link (or scan the QR code) and press Start.",
        "Откройте ссылку (или отсканируйте QR-код) и нажмите «Старт».",
    ),
    ("channels.open_tg", "Open Telegram", "Открыть Telegram"),
    ("channels.whatsapp", "WhatsApp", "WhatsApp"),
    (
        "channels.whatsapp.hint",
        "Open the link (or scan the QR code) and send the prepared message.",
        "Откройте ссылку (или отсканируйте QR-код) и отправьте подготовленное сообщение.",
    ),
    ("channels.open_wa", "Open WhatsApp", "Открыть WhatsApp"),
    ("channels.discord", "Discord", "Discord"),
    (
        "channels.discord.hint",
        "Add the app, then send it the code in a direct message.",
        "Добавьте приложение и отправьте ему код в личном сообщении.",
    ),
    ("channels.open_dc", "Add to Discord", "Добавить в Discord"),
    ("channels.qr", "QR code of this link", "QR-код этой ссылки"),
    (
        "channels.waiting",
        "Waiting for the code to be used…",
        "Ждём, когда код будет использован…",
    ),
    ("channels.done", "Connected:", "Подключено:"),
    ("channels.reload", "Show the list", "Показать список"),
    // Chat.
    (
        "chat.title",
        "Chat with your assistant",
        "Чат с ассистентом",
    ),
    (
        "chat.hint",
        "Messages here reach the same assistant as your chat apps.",
        "Сообщения отсюда попадают к тому же ассистенту, что и из мессенджеров.",
    ),
    ("chat.label", "Your message", "Ваше сообщение"),
    ("chat.send", "Send", "Отправить"),
    (
        "chat.typing",
        "The assistant is typing…",
        "Ассистент печатает…",
    ),
    ("chat.you", "You", "Вы"),
    ("chat.bot", "Assistant", "Ассистент"),
    (
        "chat.failed",
        "The message was not sent:",
        "Сообщение не отправлено:",
    ),
    (
        "chat.off",
        "Web chat is not enabled on this server.",
        "Веб-чат на этом сервере не включён.",
    ),
    // Billing.
    ("billing.title", "Plan and billing", "Тариф и оплата"),
    ("billing.plans", "Plans", "Тарифы"),
    ("plan.free", "Free", "Бесплатный"),
    ("plan.pro", "Pro", "Pro"),
    ("plan.team", "Team", "Team"),
    ("billing.price.free", "Free", "Бесплатно"),
    ("billing.per_month", "per month", "в месяц"),
    (
        "billing.messages_per_day",
        "Messages per day",
        "Сообщений в день",
    ),
    (
        "billing.channels",
        "Connected channels",
        "Подключённых каналов",
    ),
    (
        "billing.searches_per_day",
        "Web searches per day",
        "Веб-поисков в день",
    ),
    ("billing.storage", "Storage", "Хранилище"),
    ("billing.own_key", "Your own API keys", "Свои API-ключи"),
    ("billing.jobs", "Background jobs", "Фоновые задачи"),
    ("billing.models", "Platform models", "Модели платформы"),
    ("billing.all_models", "all", "все"),
    ("billing.yes", "yes", "да"),
    ("billing.no", "no", "нет"),
    ("billing.current", "Your plan", "Ваш тариф"),
    ("billing.upgrade", "Upgrade to", "Перейти на"),
    ("billing.switch", "Switch to", "Сменить на"),
    ("billing.subscription", "Subscription", "Подписка"),
    ("billing.status.active", "active", "активна"),
    (
        "billing.status.past_due",
        "payment overdue",
        "оплата просрочена",
    ),
    ("billing.status.canceled", "ended", "завершена"),
    (
        "billing.status.pending",
        "waiting for payment",
        "ожидает оплаты",
    ),
    ("billing.renews", "renews on", "продлится"),
    ("billing.ends", "ends on", "закончится"),
    (
        "billing.changed",
        "What the last plan change switched off",
        "Что отключила последняя смена тарифа",
    ),
    (
        "billing.manage",
        "Payment method and invoices",
        "Способ оплаты и счета",
    ),
    (
        "billing.cancel",
        "Cancel at the end of the period",
        "Отменить в конце периода",
    ),
    ("billing.usage", "Usage since", "Использование с"),
    (
        "billing.cost",
        "Plan price this month",
        "Стоимость тарифа за месяц",
    ),
    (
        "billing.today",
        "Messages today / daily limit",
        "Сообщений сегодня / лимит в день",
    ),
    (
        "billing.reported",
        "Tokens (reported)",
        "Токены (по отчётам)",
    ),
    ("billing.estimated", "Tokens (estimated)", "Токены (оценка)"),
    ("billing.estimated_messages", "messages", "сообщений"),
    ("billing.model", "Model", "Модель"),
    (
        "billing.model.earlier",
        "(before models were recorded)",
        "(до учёта моделей)",
    ),
    (
        "billing.model.cost",
        "Cost at the plan's token prices",
        "Стоимость по ценам токенов тарифа",
    ),
    (
        "billing.off",
        "Payments are not enabled on this server; the plans are shown for reference.",
        "Оплата на этом сервере не включена; тарифы показаны для справки.",
    ),
    (
        "billing.paid",
        "Thank you! The payment is received; your plan changes as soon as Stripe confirms it.",
        "Спасибо! Оплата получена; тариф сменится, как только Stripe её подтвердит.",
    ),
    (
        "billing.paid_active",
        "Thank you! The payment is received and your new plan is active.",
        "Спасибо! Оплата получена, новый тариф действует.",
    ),
    (
        "billing.checkout_canceled",
        "The payment was cancelled; nothing was charged.",
        "Оплата отменена; деньги не списаны.",
    ),
    (
        "billing.failed",
        "Your last payment did not go through. Your plan stays until",
        "Последний платёж не прошёл. Тариф сохранится до",
    ),
    (
        "billing.failed.after",
        "Update your payment method before then, or the plan drops to free.",
        "Обновите способ оплаты до этого срока, иначе тариф станет бесплатным.",
    ),
    ("billing.failed.link", "Update payment", "Обновить оплату"),
    (
        "err.stripe_down",
        "The payment service cannot be reached right now; nothing was changed or charged. Try again in a few minutes.",
        "Платёжный сервис сейчас недоступен; ничего не изменено и не списано. Попробуйте через несколько минут.",
    ),
    (
        "err.stripe_refused",
        "The payment service refused the request; nothing was changed or charged.",
        "Платёжный сервис отклонил запрос; ничего не изменено и не списано.",
    ),
    // API keys.
    ("keys.title", "Your own API keys", "Ваши API-ключи"),
    (
        "keys.hint",
        "Use your own OpenAI or Anthropic key. Keys are stored encrypted and only ever shown masked.",
        "Используйте свой ключ OpenAI или Anthropic. Ключи хранятся зашифрованными и показываются только скрытыми.",
    ),
    (
        "keys.forbidden",
        "Your plan does not include your own keys. Upgrade your plan to use them.",
        "Ваш тариф не включает собственные ключи. Чтобы ими пользоваться, смените тариф.",
    ),
    ("keys.stored", "Stored keys", "Сохранённые ключи"),
    ("keys.none", "No key is stored.", "Ключей нет."),
    ("keys.updated", "updated", "обновлён"),
    ("keys.add", "Add a key", "Добавить ключ"),
    ("keys.save", "Save key", "Сохранить ключ"),
    ("keys.replace", "Replace", "Заменить"),
    ("keys.new_value", "New key for", "Новый ключ для"),
    ("keys.delete", "Delete", "Удалить"),
    // Models.
    ("models.title", "Models", "Модели"),
    ("models.model", "Default model", "Модель по умолчанию"),
    (
        "models.unavailable",
        "not available now",
        "сейчас недоступна",
    ),
    (
        "models.temperature",
        "Temperature, 0 to 2 (empty: the model's default)",
        "Температура, от 0 до 2 (пусто: по умолчанию)",
    ),
    (
        "models.max_tokens",
        "Longest answer in tokens (empty: the default)",
        "Самый длинный ответ в токенах (пусто: по умолчанию)",
    ),
    (
        "models.web_search",
        "Let the assistant search the web",
        "Разрешить поиск в интернете",
    ),
    ("models.save", "Save", "Сохранить"),
    // Settings.
    ("settings.title", "Settings", "Настройки"),
    ("settings.profile", "Profile", "Профиль"),
    (
        "settings.password_hint",
        "Your current password is needed to change the e-mail or the password.",
        "Чтобы сменить почту или пароль, нужен текущий пароль.",
    ),
    ("settings.save", "Save", "Сохранить"),
    ("settings.export", "Your data", "Ваши данные"),
    (
        "settings.export.hint",
        "Download everything we hold about you as one JSON file. Keys are masked and tokens left out.",
        "Скачайте всё, что мы о вас храним, одним JSON-файлом. Ключи скрыты, токенов нет.",
    ),
    (
        "settings.export.button",
        "Download my data",
        "Скачать мои данные",
    ),
    ("settings.delete", "Delete the account", "Удаление аккаунта"),
    (
        "settings.delete.hint",
        "This deletes your assistant, its connections, keys and usage. It cannot be undone.",
        "Будут удалены ассистент, подключения, ключи и статистика. Отменить нельзя.",
    ),
    (
        "settings.delete.confirm",
        "Type your e-mail address to confirm",
        "Введите адрес почты для подтверждения",
    ),
    (
        "settings.delete.button",
        "Delete my account forever",
        "Удалить аккаунт навсегда",
    ),
    (
        "settings.delete.mismatch",
        "The confirmation does not match your e-mail address; nothing was deleted.",
        "Подтверждение не совпадает с адресом почты; ничего не удалено.",
    ),
    ("deleted.title", "Your account is deleted", "Аккаунт удалён"),
    (
        "deleted.body",
        "Everything about it has been removed. Thank you for trying Clawdbot.",
        "Всё, что с ним связано, удалено. Спасибо, что попробовали Clawdbot.",
    ),
    // Admin.
    ("admin.title", "Users", "Пользователи"),
    ("admin.plan", "Plan", "Тариф"),
    ("admin.role", "Role", "Роль"),
    ("admin.state", "State", "Состояние"),
    ("admin.active", "Active", "Активен"),
    ("admin.suspended", "Suspended", "Приостановлен"),
    ("admin.suspend", "Suspend", "Приостановить"),
    ("admin.resume", "Resume", "Возобновить"),
    ("admin.next", "Next page", "Следующая страница"),
    // Notices after a change.
    ("done.saved", "Saved.", "Сохранено."),
    (
        "done.plan_changed",
        "Your plan is changed; the difference is prorated.",
        "Тариф изменён; разница пересчитана пропорционально.",
    ),
    (
        "done.sub_canceled",
        "The subscription is cancelled: your plan stays until the end of the paid period.",
        "Подписка отменена: тариф действует до конца оплаченного периода.",
    ),
    ("done.key_added", "The key is saved.", "Ключ сохранён."),
    ("done.key_replaced", "The key is replaced.", "Ключ заменён."),
    ("done.key_deleted", "The key is deleted.", "Ключ удалён."),
    ("done.disconnected", "Disconnected.", "Отключено."),
    (
        "done.suspended",
        "The account is suspended.",
        "Аккаунт приостановлен.",
    ),
    (
        "done.resumed",
        "The account is active again.",
        "Аккаунт снова активен.",
    ),
    // Errors.
    ("err.title", "Something is not right", "Что-то не так"),
    ("err.invalid", "Please check", "Проверьте"),
    (
        "err.credentials",
        "Wrong e-mail or password.",
        "Неверная почта или пароль.",
    ),
    ("err.conflict", "This already exists", "Это уже существует"),
    ("err.forbidden", "This is not allowed", "Это не разрешено"),
    (
        "err.not_found",
        "That no longer exists; perhaps it was removed in another tab.",
        "Этого больше нет; возможно, удалено в другой вкладке.",
    ),
    (
        "err.too_many",
        "Too many failed attempts. Try again in minutes:",
        "Слишком много неудачных попыток. Попробуйте снова через минут:",
    ),
    (
        "err.channel_off",
        "This is not enabled on this server.",
        "На этом сервере это не включено.",
    ),
    (
        "err.internal",
        "Something went wrong on our side. Please try again in a minute.",
        "У нас что-то пошло не так. Попробуйте через минуту.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_key_is_unique_and_said_in_both_languages() {
        let mut seen = std::collections::HashSet::new();
        for (k, en, ru) in TABLE {
            assert!(seen.insert(*k), "{k} twice");
            assert!(!en.is_empty() && !ru.is_empty(), "{k}");
        }
    }

    /// Every `c.t("...")` in the templates names a key of the table.
    #[test]
    fn the_templates_use_only_known_keys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/dashboard");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for part in text.split("c.t(\"").skip(1) {
                let key = part.split('"').next().unwrap();
                assert!(Lang::has(key), "missing text {key}");
                n += 1;
            }
        }
        assert!(n > 50, "found only {n} texts");
    }

    #[test]
    fn the_cookie_wins_then_the_browser_order() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of_request(&h), Lang::En);
        h.insert(
            "accept-language",
            HeaderValue::from_static("de-DE,ru;q=0.9,en;q=0.8"),
        );
        assert_eq!(Lang::of_request(&h), Lang::Ru);
        h.insert("cookie", HeaderValue::from_static("cb_lang=en"));
        assert_eq!(Lang::of_request(&h), Lang::En);
    }

    #[test]
    fn errors_are_words_without_internals() {
        let e = ApiError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(Lang::Ru.explain(&e), Lang::Ru.t("err.internal"));
        let e = ApiError::Invalid {
            field: Some("password".into()),
            message: "must have at least 10 characters".into(),
        };
        assert_eq!(
            Lang::En.explain(&e),
            "Please check: Password: must have at least 10 characters"
        );
        assert!(Lang::Ru.explain(&e).ends_with(Lang::Ru.t("pw.rules")));
    }
}
